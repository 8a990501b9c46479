import { act, renderHook, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useChat } from '../stores/chat';
import { useConversations } from '../stores/conversations';
import { controllableSse, delta } from '../test/sse-response';
import { chooseVariant, syncOpenConversation, useChatStream } from './useChatStream';

const fetchMock = vi.fn();

beforeEach(() => {
  vi.stubGlobal('fetch', fetchMock);
  fetchMock.mockReset();
  useChat.getState().reset(null);
  useConversations.setState({ items: [], refreshSoon: () => {}, watchTitle: () => {} });
});

afterEach(() => vi.unstubAllGlobals());

describe('useChatStream', () => {
  it('streams deltas into the pending answer and commits it when done', async () => {
    const sse = controllableSse({ 'X-Conversation-ID': 'c1' });
    fetchMock.mockResolvedValueOnce(sse.response);
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.send('hello');
    });
    await waitFor(() => expect(useChat.getState().streaming).toBe(true));
    sse.push(delta('Hi', { conversation_id: 'c1' }));
    sse.push(delta(' there'));
    await waitFor(() => expect(useChat.getState().pending).toBe('Hi there'));
    expect(useChat.getState().conversationId).toBe('c1');
    sse.push('[DONE]');
    sse.close();
    await act(() => done);
    const { messages, streaming } = useChat.getState();
    expect(streaming).toBe(false);
    expect(messages.map((m) => [m.role, m.content, m.status])).toEqual([
      ['user', 'hello', 'complete'],
      ['assistant', 'Hi there', 'complete'],
    ]);
    const body = JSON.parse(fetchMock.mock.calls[0]![1].body as string);
    expect(body).toMatchObject({ messages: [{ role: 'user', content: 'hello' }], stream: true });
  });

  it('keeps reasoning apart from the answer, times it, and never sends it back as history', async () => {
    for (const field of ['reasoning', 'reasoning_content']) {
      useChat.getState().reset(null);
      const sse = controllableSse({ 'X-Conversation-ID': 'c9' });
      fetchMock.mockResolvedValueOnce(sse.response);
      const { result } = renderHook(() => useChatStream());
      let done!: Promise<void>;
      act(() => {
        done = result.current.send('why?');
      });
      await waitFor(() => expect(useChat.getState().streaming).toBe(true));
      sse.push({ choices: [{ index: 0, delta: { [field]: 'Let me ' }, finish_reason: null }] });
      sse.push({ choices: [{ index: 0, delta: { [field]: 'think.' }, finish_reason: null }] });
      await waitFor(() => expect(useChat.getState().pendingReasoning).toBe('Let me think.'));
      expect(useChat.getState().pending).toBe('');
      sse.push(delta('Because.'));
      await waitFor(() => expect(useChat.getState().pending).toBe('Because.'));
      sse.push('[DONE]');
      sse.close();
      await act(() => done);
      const answer = useChat.getState().messages.at(-1)!;
      expect(answer).toMatchObject({ role: 'assistant', content: 'Because.', reasoning: 'Let me think.' });
      expect(typeof answer.reasoningMs).toBe('number');
    }
    // the next question's history carries the answers, not the thinking
    fetchMock.mockResolvedValueOnce(new Response('data: [DONE]\n\n', { headers: { 'Content-Type': 'text/event-stream' } }));
    const { result } = renderHook(() => useChatStream());
    await act(() => result.current.send('and then?'));
    // the last chat request (the conversation's re-sync after each answer is a GET without body)
    const sent = fetchMock.mock.calls.filter((call) => typeof call[1]?.body === 'string');
    const body = JSON.parse(sent.at(-1)![1].body as string);
    expect(body.messages[1]).toEqual({ role: 'assistant', content: 'Because.' });
  });

  it('splits <think> text from servers without a reasoning parser', async () => {
    const sse = controllableSse();
    fetchMock.mockResolvedValueOnce(sse.response);
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.send('q');
    });
    sse.push(delta('<think>hmm'));
    await waitFor(() => expect(useChat.getState().pendingReasoning).toBe('hmm'));
    expect(useChat.getState().pending).toBe('');
    sse.push(delta('</think>Answer'));
    sse.push('[DONE]');
    sse.close();
    await act(() => done);
    expect(useChat.getState().messages.at(-1)).toMatchObject({ content: 'Answer', reasoning: 'hmm' });
  });

  it('stop aborts the request; the text so far is kept as a stopped answer, with no error', async () => {
    const sse = controllableSse();
    let signal: AbortSignal | undefined;
    fetchMock.mockImplementationOnce((_url: string, init: RequestInit) => {
      signal = init.signal ?? undefined;
      signal?.addEventListener('abort', () => sse.error(new DOMException('aborted', 'AbortError')));
      return Promise.resolve(sse.response);
    });
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.send('tell me a story');
    });
    sse.push(delta('Once upon'));
    await waitFor(() => expect(useChat.getState().pending).toBe('Once upon'));
    act(() => result.current.stop());
    await act(() => done);
    expect(signal?.aborted).toBe(true);
    const { messages, failure, streaming } = useChat.getState();
    expect(streaming).toBe(false);
    expect(failure).toBeNull();
    expect(messages.at(-1)).toMatchObject({ role: 'assistant', content: 'Once upon', status: 'partial' });
  });

  it('an error event after the first token becomes an inline failure that can be retried', async () => {
    const sse = controllableSse({ 'X-Conversation-ID': 'c2' });
    fetchMock.mockResolvedValueOnce(sse.response);
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.send('q');
    });
    sse.push(delta('part'));
    sse.push({ error: { code: 'upstream_error', message: 'connection lost', request_id: 'r' } });
    sse.push('[DONE]');
    sse.close();
    await act(() => done);
    const { failure, messages } = useChat.getState();
    expect(failure?.error.code).toBe('upstream_error');
    expect(failure?.questionStored).toBe(true);
    expect(messages.at(-1)).toMatchObject({ content: 'part', status: 'error' });

    const again = controllableSse();
    fetchMock.mockResolvedValueOnce(again.response);
    let retried!: Promise<void>;
    act(() => {
      retried = result.current.retry();
    });
    again.push(delta('full answer'));
    again.push('[DONE]');
    again.close();
    await act(() => retried);
    const body = JSON.parse(fetchMock.mock.calls[1]![1].body as string);
    expect(body).toMatchObject({ conversation_id: 'c2', regenerate: true, messages: [{ role: 'user', content: 'q' }] });
    expect(useChat.getState().messages.map((m) => m.content)).toEqual(['q', 'full answer']);
  });

  it('regenerate keeps the earlier answer as a variant; stopped before a token, the old one stays', async () => {
    useChat.setState({
      conversationId: 'c1',
      messages: [
        { key: 'srv-10', id: 10, role: 'user', content: 'q', status: 'complete' },
        { key: 'srv-11', id: 11, role: 'assistant', content: 'first', status: 'complete' },
      ],
    });
    const sse = controllableSse({ 'X-Conversation-ID': 'c1' });
    fetchMock.mockResolvedValueOnce(sse.response);
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.regenerate();
    });
    sse.push(delta('second'));
    sse.push('[DONE]');
    sse.close();
    await act(() => done);
    const body = JSON.parse(fetchMock.mock.calls[0]![1].body as string);
    expect(body).toMatchObject({ regenerate: true, messages: [{ role: 'user', content: 'q' }] });
    const [, answer] = useChat.getState().messages;
    expect(useChat.getState().messages).toHaveLength(2);
    expect(answer).toMatchObject({ content: 'second', variantIndex: 1, key: 'srv-11' });
    expect(answer!.variants!.map((v) => [v.id, v.content])).toEqual([
      [11, 'first'],
      [null, 'second'],
    ]);

    // a third try stopped before its first token: the answer shown before stays
    const stopped = controllableSse({ 'X-Conversation-ID': 'c1' });
    fetchMock.mockImplementationOnce((_url: string, init: RequestInit) => {
      init.signal?.addEventListener('abort', () => stopped.error(new DOMException('aborted', 'AbortError')));
      return Promise.resolve(stopped.response);
    });
    act(() => {
      done = result.current.regenerate();
    });
    await waitFor(() => expect(useChat.getState().streaming).toBe(true));
    act(() => result.current.stop());
    await act(() => done);
    expect(useChat.getState().messages[1]).toMatchObject({ content: 'second', variantIndex: 1 });
  });

  it('a regenerated answer that thought keeps its thoughts, as itself and as its variant', async () => {
    useChat.setState({
      conversationId: 'c1',
      messages: [
        { key: 'srv-10', id: 10, role: 'user', content: 'q', status: 'complete' },
        { key: 'srv-11', id: 11, role: 'assistant', content: 'first', status: 'complete' },
      ],
    });
    const sse = controllableSse({ 'X-Conversation-ID': 'c1' });
    fetchMock.mockResolvedValueOnce(sse.response);
    const { result } = renderHook(() => useChatStream());
    let done!: Promise<void>;
    act(() => {
      done = result.current.regenerate();
    });
    sse.push({ choices: [{ index: 0, delta: { reasoning: 'Again, then.' }, finish_reason: null }] });
    sse.push(delta('second'));
    sse.push('[DONE]');
    sse.close();
    await act(() => done);
    const answer = useChat.getState().messages[1]!;
    expect(answer).toMatchObject({ content: 'second', reasoning: 'Again, then.', variantIndex: 1 });
    expect(answer.variants!.map((v) => [v.content, v.reasoning])).toEqual([
      ['first', undefined],
      ['second', 'Again, then.'],
    ]);
  });

  it('choosing a variant shows it at once and stores the choice by its server id', async () => {
    useChat.setState({
      conversationId: 'c1',
      messages: [
        { key: 'srv-10', id: 10, role: 'user', content: 'q', status: 'complete' },
        {
          key: 'srv-11',
          id: 12,
          role: 'assistant',
          content: 'second',
          status: 'complete',
          variants: [
            { id: 11, content: 'first', status: 'partial' },
            { id: 12, content: 'second', status: 'complete' },
          ],
          variantIndex: 1,
        },
      ],
    });
    fetchMock.mockResolvedValueOnce(new Response('{}', { status: 200, headers: { 'Content-Type': 'application/json' } }));
    await act(() => chooseVariant(1, 0));
    expect(useChat.getState().messages[1]).toMatchObject({ id: 11, content: 'first', status: 'partial', variantIndex: 0 });
    const [url, init] = fetchMock.mock.calls[0]! as [string, RequestInit];
    expect(url).toMatch(/\/api\/conversations\/c1\/messages\/11\/active$/);
    expect(init.method).toBe('PUT');
  });

  it("the server's view after an answer keeps a variant the user chose meanwhile", async () => {
    const variant = (id: number, content: string) => ({
      id, role: 'assistant' as const, content, model: null, prompt_tokens: null, completion_tokens: null,
      status: 'complete', created_at: '2026-01-01T00:00:00Z',
    });
    useChat.setState({
      conversationId: 'c1',
      streaming: false,
      messages: [
        { key: 'k0', id: 10, role: 'user', content: 'q', status: 'complete' },
        {
          key: 'k1', id: 11, role: 'assistant', content: 'first', status: 'complete', variantIndex: 0,
          variants: [{ id: 11, content: 'first', status: 'complete' }, { id: null, content: 'second', status: 'complete' }],
        },
      ],
    });
    // read before the choice reached the server: it still shows the newest answer
    const detail = {
      id: 'c1', title: 't', system_prompt: null, model: null, created_at: '', updated_at: '',
      messages: [
        { ...variant(10, 'q'), role: 'user' },
        { ...variant(12, 'second'), variants: [variant(11, 'first'), variant(12, 'second')], variant_index: 1 },
      ],
    };
    fetchMock.mockResolvedValueOnce(new Response(JSON.stringify(detail), { status: 200, headers: { 'Content-Type': 'application/json' } }));
    expect(await syncOpenConversation('c1', [0])).toBe(true);
    const [, answer] = useChat.getState().messages;
    expect(answer).toMatchObject({ key: 'k1', id: 11, content: 'first', variantIndex: 0 });
    expect(answer!.variants!.map((v) => v.id)).toEqual([11, 12]); // the new answer's id is known now
  });

  it('a 429 reports the wait from Retry-After', async () => {
    fetchMock.mockResolvedValueOnce(
      new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down', request_id: 'r' } }), {
        status: 429,
        headers: { 'Retry-After': '42', 'Content-Type': 'application/json' },
      }),
    );
    const { result } = renderHook(() => useChatStream());
    await act(() => result.current.send('q'));
    const { failure } = useChat.getState();
    expect(failure?.error.retryAfter).toBe(42);
    expect(failure?.questionStored).toBe(false);
    expect(failure!.retryAt! - Date.now()).toBeGreaterThan(40_000);
  });
});
