import { create } from 'zustand';
import type { ApiError } from '../api/errors';
import type { MessageOut, MessageVariant } from '../api/types';

export type UiStatus = 'complete' | 'partial' | 'error';

/** One answer of a regenerated turn; `id` is the server's once it is known. */
export interface UiVariant {
  id: number | null;
  content: string;
  status: UiStatus;
  /** a reasoning model's chain of thought and how long it took */
  reasoning?: string;
  reasoningMs?: number | null;
}

export interface UiMessage {
  /** stable React key: the server id when known, else a local one */
  key: string;
  role: 'user' | 'assistant';
  content: string;
  status: UiStatus;
  /** the server id, when known */
  id?: number | null;
  /** an answer that was regenerated: all its variants (this one at `variantIndex`) */
  variants?: UiVariant[];
  variantIndex?: number;
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

const uiStatus = (status: string): UiStatus => (status === 'partial' || status === 'error' ? status : 'complete');

export function toUiMessages(messages: MessageOut[]): UiMessage[] {
  return messages
    .filter((m): m is MessageOut & { role: 'user' | 'assistant' } => m.role === 'user' || m.role === 'assistant')
    .map((m) => {
      const message: UiMessage = {
        key: `srv-${m.id}`,
        id: m.id,
        role: m.role,
        content: m.content,
        status: uiStatus(m.status),
        ...thinkingOf(m),
      };
      if (m.variants && m.variants.length > 1) {
        message.variants = m.variants.map((v) => ({
          id: v.id,
          content: v.content,
          status: uiStatus(v.status),
          ...thinkingOf(v),
        }));
        message.variantIndex = m.variant_index ?? m.variants.length - 1;
      }
      return message;
    });
}

/** A stored answer's chain of thought, when it has one. */
function thinkingOf(m: MessageVariant): Pick<UiVariant, 'reasoning' | 'reasoningMs'> {
  return m.reasoning ? { reasoning: m.reasoning, reasoningMs: m.reasoning_ms ?? null } : {};
}

/** The variants of an answer, itself the only one when it was never regenerated. */
export function variantsOf(message: UiMessage): UiVariant[] {
  if (message.variants) return message.variants;
  const { id, content, status, reasoning, reasoningMs } = message;
  const only: UiVariant = { id: id ?? null, content, status };
  if (reasoning) Object.assign(only, { reasoning, reasoningMs });
  return [only];
}

/** `message` showing its variant `index` instead. */
export function withVariant(message: UiMessage, index: number): UiMessage {
  const variants = variantsOf(message);
  const chosen = variants[index];
  if (!chosen) return message;
  const shown: UiMessage = { ...message, id: chosen.id, content: chosen.content, status: chosen.status, variants, variantIndex: index };
  delete shown.reasoning; // the chosen answer's own thoughts, or none
  delete shown.reasoningMs;
  if (chosen.reasoning) Object.assign(shown, { reasoning: chosen.reasoning, reasoningMs: chosen.reasoningMs ?? null });
  return shown;
}
