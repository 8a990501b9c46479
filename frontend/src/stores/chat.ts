import { create } from 'zustand';
import type { ApiError } from '../api/errors';
import type { MessageOut } from '../api/types';

export type UiStatus = 'complete' | 'partial' | 'error';

export interface UiMessage {
  /** stable React key: the server id when known, else a local one */
  key: string;
  role: 'user' | 'assistant';
  content: string;
  status: UiStatus;
  /** a reasoning model's chain of thought (never sent back as history) and how long it took */
  reasoning?: string;
  reasoningMs?: number | null;
}

export interface ChatFailure {
  error: ApiError;
  /** epoch ms before which a retry will be refused again (429 / 503 Retry-After) */
  retryAt: number | null;
  /** whether the gateway already stored the question (retry must not store it twice) */
  questionStored: boolean;
}

/**
 * The open conversation. Saved messages (`messages`) are kept apart from the answer being
 * streamed (`pending`, `streaming`), as llama.cpp's web UI does: the in-flight text is
 * committed to `messages` only once the stream has ended, however it ended.
 */
interface ChatState {
  conversationId: string | null;
  messages: UiMessage[];
  loading: boolean;
  systemPrompt: string;
  temperature: number | null;
  maxTokens: number | null;
  streaming: boolean;
  pending: string;
  /** the chain of thought of the answer being streamed, and when it ended (ms), if it has */
  pendingReasoning: string;
  pendingReasoningMs: number | null;
  failure: ChatFailure | null;
  reset: (conversationId?: string | null) => void;
  set: (patch: Partial<ChatState>) => void;
}

let localKey = 0;
export const nextKey = (): string => `local-${++localKey}`;

export const useChat = create<ChatState>((set) => ({
  conversationId: null,
  messages: [],
  loading: false,
  systemPrompt: '',
  temperature: null,
  maxTokens: null,
  streaming: false,
  pending: '',
  pendingReasoning: '',
  pendingReasoningMs: null,
  failure: null,
  reset: (conversationId = null) =>
    set({
      conversationId,
      messages: [],
      loading: false,
      systemPrompt: '',
      streaming: false,
      pending: '',
      pendingReasoning: '',
      pendingReasoningMs: null,
      failure: null,
    }),
  set: (patch) => set(patch),
}));

export function toUiMessages(messages: MessageOut[]): UiMessage[] {
  return messages
    .filter((m): m is MessageOut & { role: 'user' | 'assistant' } => m.role === 'user' || m.role === 'assistant')
    .map((m) => ({
      key: `srv-${m.id}`,
      role: m.role,
      content: m.content,
      status: m.status === 'partial' || m.status === 'error' ? m.status : 'complete',
      ...(m.reasoning ? { reasoning: m.reasoning, reasoningMs: m.reasoning_ms ?? null } : {}),
    }));
}
