import { useCallback } from 'react';
import { streamChat } from '../api/chat';
import { ApiError, isAbortError } from '../api/errors';
import type { ChatMessage, ChatRequestBody } from '../api/types';
import { useAuth } from '../stores/auth';
import { nextKey, useChat, type UiMessage } from '../stores/chat';
import { splitThink } from '../lib/think';
import { useConversations } from '../stores/conversations';
import { useDraft } from '../stores/draft';
import { frameBatcher } from './frameBatcher';

/** The one request in flight; stopping aborts it (the gateway then cancels upstream). */
let inflight: AbortController | null = null;

function history(messages: UiMessage[]): ChatMessage[] {
  // an empty answer (stopped before its first token) is not a message the model may see
  return messages.filter((m) => m.content.trim()).map((m) => ({ role: m.role, content: m.content }));
}

async function run(messages: UiMessage[], opts: { regenerate: boolean; question: string }): Promise<void> {
  const chat = useChat.getState();
  const controller = new AbortController();
  inflight = controller;
  chat.set({ messages, streaming: true, pending: '', pendingReasoning: '', pendingReasoningMs: null, failure: null });

  const body: ChatRequestBody = { messages: history(messages) };
  if (chat.conversationId) body.conversation_id = chat.conversationId;
  if (chat.systemPrompt.trim()) body.system_prompt = chat.systemPrompt;
  if (chat.temperature !== null) body.temperature = chat.temperature;
  if (chat.maxTokens !== null) body.max_tokens = chat.maxTokens;
  if (opts.regenerate) body.regenerate = true;

  let text = '';
  let reasoning = ''; // from the server's reasoning parser; else `<think>` inline in `text`
  let thinkStart: number | null = null;
  let thinkMs: number | null = null;
  let started = false;
  const view = (): { answer: string; thought: string } => {
    if (reasoning) return { answer: text, thought: reasoning };
    const split = splitThink(text);
    return { answer: split.answer, thought: split.reasoning };
  };
  const batch = frameBatcher(() => {
    if (inflight !== controller) return;
    const { answer, thought } = view();
    useChat.getState().set({ pending: answer, pendingReasoning: thought, pendingReasoningMs: thinkMs });
  });
  const commit = (status: UiMessage['status']): UiMessage[] => {
    const current = useChat.getState().messages;
    const { answer, thought } = view();
    if (!answer && !thought) return current;
    const message: UiMessage = { key: nextKey(), role: 'assistant', content: answer, status };
    if (thought) {
      message.reasoning = thought;
      message.reasoningMs = thinkMs ?? (thinkStart !== null ? Date.now() - thinkStart : null);
    }
    return [...current, message];
  };
  const reset = { pending: '', pendingReasoning: '', pendingReasoningMs: null };

  try {
    const onUnauthorized = () => useAuth.getState().logout('expired');
    for await (const event of streamChat(body, controller.signal, onUnauthorized)) {
      started = true;
      if (event.type === 'conversation') {
        if (useChat.getState().conversationId !== event.id) {
          useChat.getState().set({ conversationId: event.id });
          useConversations.getState().touch(event.id, opts.question);
        }
      } else if (event.type === 'reasoning') {
        thinkStart ??= Date.now();
        reasoning += event.text;
        batch.schedule();
      } else if (event.type === 'delta') {
        text += event.text;
        if (!reasoning) {
          const split = splitThink(text);
          if (split.open || split.reasoning) thinkStart ??= Date.now();
          if (!split.open && thinkStart !== null && thinkMs === null) thinkMs = Date.now() - thinkStart;
        } else if (thinkStart !== null && thinkMs === null) {
          thinkMs = Date.now() - thinkStart; // the answer started: thinking is over
        }
        batch.schedule();
      }
    }
    batch.cancel();
    useChat.getState().set({ messages: commit('complete'), ...reset, streaming: false });
  } catch (err) {
    batch.cancel();
    if (isAbortError(err)) {
      // stopping is expected: what arrived is kept, marked as stopped
      useChat.getState().set({ messages: commit('partial'), ...reset, streaming: false });
    } else {
      const error = err instanceof ApiError ? err : new ApiError(0, 'network_error', String(err));
      if (error.status === 401) {
        // the session ended: give the question back to the input so nothing typed is lost
        const current = useChat.getState().messages;
        const last = current[current.length - 1];
        if (!opts.regenerate && last?.role === 'user') {
          useChat.getState().set({ messages: current.slice(0, -1) });
          useDraft.getState().setDraft(last.content);
        }
        useChat.getState().set({ ...reset, streaming: false });
      } else {
        useChat.getState().set({
          messages: commit('error'),
          ...reset,
          streaming: false,
          failure: {
            error,
            retryAt: error.retryAfter ? Date.now() + error.retryAfter * 1000 : null,
            // 429 and validation errors are refused before anything is stored
            questionStored: started || error.status >= 500,
          },
        });
      }
    }
  } finally {
    if (inflight === controller) inflight = null;
    useConversations.getState().refreshSoon();
  }
}

export function stopChatStream(): void {
  inflight?.abort();
}

/** Sending, stopping, regenerating and retrying the open conversation's answer. */
export function useChatStream() {
  const streaming = useChat((s) => s.streaming);

  const send = useCallback(async (text: string) => {
    const question = text.trim();
    if (!question || useChat.getState().streaming) return;
    const messages: UiMessage[] = [
      ...useChat.getState().messages,
      { key: nextKey(), role: 'user', content: question, status: 'complete' },
    ];
    await run(messages, { regenerate: false, question });
  }, []);

  const regenerate = useCallback(async () => {
    const { messages, streaming: busy } = useChat.getState();
    if (busy) return;
    const lastUser = messages.map((m) => m.role).lastIndexOf('user');
    if (lastUser < 0) return;
    const question = messages[lastUser]?.content ?? '';
    await run(messages.slice(0, lastUser + 1), { regenerate: true, question });
  }, []);

  const retry = useCallback(async () => {
    const { messages, failure, streaming: busy } = useChat.getState();
    if (busy || !failure) return;
    // drop a failed partial answer; the question stays
    const kept = messages[messages.length - 1]?.role === 'assistant' ? messages.slice(0, -1) : messages;
    const question = kept[kept.length - 1]?.content ?? '';
    const stored = failure.questionStored && useChat.getState().conversationId !== null;
    await run(kept, { regenerate: stored, question });
  }, []);

  const stop = useCallback(() => stopChatStream(), []);

  return { streaming, send, stop, regenerate, retry };
}
