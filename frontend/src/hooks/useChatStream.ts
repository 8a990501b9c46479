import { useCallback } from 'react';
import { streamChat } from '../api/chat';
import { conversationsApi } from '../api/endpoints';
import { ApiError, isAbortError } from '../api/errors';
import type { ChatMessage, ChatRequestBody } from '../api/types';
import { useAuth } from '../stores/auth';
import { nextKey, toUiMessages, useChat, variantsOf, withVariant, type UiMessage, type UiVariant } from '../stores/chat';
import { splitThink } from '../lib/think';
import { useConversations } from '../stores/conversations';
import { useDraft } from '../stores/draft';
import { useRouter } from '../stores/router';
import { frameBatcher } from './frameBatcher';

/** The one request in flight; stopping aborts it (the gateway then cancels upstream). */
let inflight: AbortController | null = null;

function history(messages: UiMessage[]): ChatMessage[] {
  // an empty answer (stopped before its first token) is not a message the model may see
  return messages.filter((m) => m.content.trim()).map((m) => ({ role: m.role, content: m.content }));
}

interface RunOptions {
  regenerate: boolean;
  question: string;
  /** regenerating: the answer being replaced, kept as a variant of the turn */
  replaced?: UiMessage;
}

async function run(messages: UiMessage[], opts: RunOptions): Promise<void> {
  const chat = useChat.getState();
  const controller = new AbortController();
  inflight = controller;
  chat.set({ messages, streaming: true, pending: '', pendingReasoning: '', pendingReasoningMs: null, failure: null });

  const body: ChatRequestBody = { messages: history(messages) };
  if (chat.conversationId) body.conversation_id = chat.conversationId;
  if (chat.systemPrompt.trim()) body.system_prompt = chat.systemPrompt;
  if (chat.temperature !== null) body.temperature = chat.temperature;
  if (chat.maxTokens !== null) body.max_tokens = chat.maxTokens;
  // another answer to a stored turn; with no conversation yet it is simply a new question
  if (opts.regenerate && chat.conversationId) body.regenerate = true;

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
    const { replaced } = opts;
    const { answer, thought } = view();
    if (!answer && !thought) return replaced ? [...current, replaced] : current; // nothing new: the old answer stays
    const message: UiMessage = { key: nextKey(), role: 'assistant', content: answer, status };
    if (thought) {
      message.reasoning = thought;
      message.reasoningMs = thinkMs ?? (thinkStart !== null ? Date.now() - thinkStart : null);
    }
    if (!replaced) return [...current, message];
    // the new answer is the turn's newest variant, the earlier ones one switch away
    const variant: UiVariant = { id: null, content: answer, status };
    if (thought) Object.assign(variant, { reasoning: message.reasoning, reasoningMs: message.reasoningMs });
    const variants = [...variantsOf(replaced), variant];
    return [...current, { ...message, key: replaced.key, id: null, variants, variantIndex: variants.length - 1 }];
  };
  let created: string | null = null;
  const reset = { pending: '', pendingReasoning: '', pendingReasoningMs: null };

  try {
    const onUnauthorized = () => useAuth.getState().logout('expired');
    for await (const event of streamChat(body, controller.signal, onUnauthorized)) {
      started = true;
      if (event.type === 'conversation') {
        if (inflight === controller && useChat.getState().conversationId !== event.id) {
          if (useChat.getState().conversationId === null) created = event.id;
          useChat.getState().set({ conversationId: event.id });
          useConversations.getState().touch(event.id, opts.question);
          // the conversation this answer created gets its URL here, once. (An effect syncing the
          // URL to the store fought the loader, which syncs the store to the URL: switching
          // conversations or going Back ping-ponged between both ids until React gave up.)
          const route = useRouter.getState().route;
          if (route.name === 'chat' && route.conversationId === null) {
            useRouter.getState().navigate({ name: 'chat', conversationId: event.id }, { replace: true });
          }
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
    const current = inflight === controller;
    if (current) inflight = null;
    // a new conversation's title: the question's first words now, a generated one soon after
    if (created) useConversations.getState().watchTitle(created);
    else useConversations.getState().refreshSoon();
    const id = useChat.getState().conversationId;
    if (current && id) void syncOpenConversation(id);
  }
}

/** How many local messages the server's view must cover before it replaces them. */
function covers(server: UiMessage[], local: UiMessage[]): boolean {
  if (server.length < local.length) return false;
  return local.every((m, i) => variantsOf(server[i]!).length >= variantsOf(m).length);
}

/**
 * The server's message with what is on screen kept: its React key (nothing re-mounts), and a
 * variant the user chose (the server may not have stored that choice yet).
 */
function merged(server: UiMessage, local: UiMessage | undefined): UiMessage {
  const key = local?.key ?? server.key;
  const chosen = local?.variants?.[local.variantIndex ?? -1];
  const index = chosen?.id != null ? (server.variants?.findIndex((v) => v.id === chosen.id) ?? -1) : -1;
  return index >= 0 && index !== server.variantIndex ? { ...withVariant(server, index), key } : { ...server, key };
}

/**
 * After an answer, take the server's view of the open conversation (its message ids, which
 * choosing a variant needs); the gateway writes a moment after the stream ends, so a view that
 * does not cover what is shown yet is asked for again, a few times.
 */
export async function syncOpenConversation(id: string, delays: number[] = [150, 600, 2000]): Promise<boolean> {
  for (const delay of delays) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    const before = useChat.getState();
    if (before.conversationId !== id || before.streaming) return false;
    let detail;
    try {
      detail = await conversationsApi.get(id);
    } catch {
      return false;
    }
    const chat = useChat.getState();
    if (chat.conversationId !== id || chat.streaming || chat.messages !== before.messages) return false;
    const server = toUiMessages(detail.messages);
    if (!covers(server, chat.messages)) continue;
    chat.set({ messages: server.map((m, i) => merged(m, chat.messages[i])) });
    return true;
  }
  return false;
}

/** Show variant `index` of the answer at `position` and remember the choice on the server. */
export async function chooseVariant(position: number, index: number): Promise<void> {
  const chat = useChat.getState();
  const message = chat.messages[position];
  const id = chat.conversationId;
  if (!message || message.role !== 'assistant' || chat.streaming || !id) return;
  const shown = withVariant(message, index);
  chat.set({ messages: chat.messages.map((m, i) => (i === position ? shown : m)) });
  let variantId = shown.id;
  if (variantId == null) {
    // chosen before the server's ids arrived: fetch them first
    await syncOpenConversation(id, [0, 500, 1500]);
    const synced = useChat.getState().messages[position];
    variantId = synced?.variants?.[index]?.id ?? null;
    if (synced && synced.variantIndex !== index) {
      useChat.getState().set({
        messages: useChat.getState().messages.map((m, i) => (i === position ? withVariant(synced, index) : m)),
      });
    }
  }
  if (variantId == null || useChat.getState().conversationId !== id) return;
  try {
    await conversationsApi.chooseVariant(id, variantId);
  } catch {
    // the choice stays on screen; the server keeps showing the newest answer after a reload
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
    const replaced = messages[lastUser + 1];
    await run(messages.slice(0, lastUser + 1), {
      regenerate: true,
      question,
      replaced: replaced?.role === 'assistant' ? replaced : undefined,
    });
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
