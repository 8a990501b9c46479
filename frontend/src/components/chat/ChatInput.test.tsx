import { fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useLangStore } from '../../i18n';
import { estimateTokens } from '../../lib/tokens';
import { useChat } from '../../stores/chat';
import { useDraft } from '../../stores/draft';
import { initialModelState, useModelStore } from '../../stores/models';
import { ChatInput } from './ChatInput';

const served = { models: [{ id: 'qwen', name: 'qwen', status: 'running', max_model_len: 8192 }] };

beforeEach(() => {
  useLangStore.setState({ lang: 'en' });
  useModelStore.setState({ ...initialModelState });
  useChat.getState().reset(null);
  useDraft.getState().setDraft('');
  vi.stubGlobal(
    'fetch',
    vi.fn(() => Promise.resolve(new Response(JSON.stringify(served), { status: 200, headers: { 'Content-Type': 'application/json' } }))),
  );
});
afterEach(() => vi.unstubAllGlobals());

function typeText(text: string) {
  fireEvent.change(screen.getByTestId('chat-input'), { target: { value: text } });
}

describe('ChatInput and the context length', () => {
  it('warns about a 60,000-character message for an 8k model and does not send it', async () => {
    const onSend = vi.fn();
    render(<ChatInput streaming={false} onSend={onSend} onStop={vi.fn()} />);
    await waitFor(() => expect(useModelStore.getState().servedMaxModelLen).toBe(8192));
    typeText('lorem ipsum '.repeat(5000));
    expect(await screen.findByTestId('context-warning')).toHaveTextContent('8,192 tokens');
    expect(screen.getByTestId('send-button')).toBeDisabled();
    fireEvent.keyDown(screen.getByTestId('chat-input'), { key: 'Enter' });
    expect(onSend).not.toHaveBeenCalled();
    expect(useDraft.getState().draft).toHaveLength(60_000); // kept, to be shortened
  });

  it('counts the conversation so far and max_tokens too, and sends what fits', async () => {
    const onSend = vi.fn();
    useChat.getState().set({ messages: [{ key: 'k1', role: 'user', content: '가'.repeat(7000), status: 'complete' }] });
    render(<ChatInput streaming={false} onSend={onSend} onStop={vi.fn()} />);
    await waitFor(() => expect(useModelStore.getState().servedMaxModelLen).toBe(8192));
    typeText('Hello there');
    expect(screen.queryByTestId('context-warning')).not.toBeInTheDocument();
    useChat.getState().set({ maxTokens: 2000 });
    expect(await screen.findByTestId('context-warning')).toBeInTheDocument();
    useChat.getState().set({ maxTokens: null });
    await waitFor(() => expect(screen.queryByTestId('context-warning')).not.toBeInTheDocument());
    fireEvent.click(screen.getByTestId('send-button'));
    expect(onSend).toHaveBeenCalledWith('Hello there');
  });

  it('estimates English at about four characters a token and Hangul at one', () => {
    expect(estimateTokens('abcdefgh')).toBe(2);
    expect(estimateTokens('안녕하세요')).toBe(5);
  });
});
