import { useEffect } from 'react';
import { estimatePromptTokens } from '../lib/tokens';
import { useChat } from '../stores/chat';
import { refreshServedModels, useModelStore } from '../stores/models';

/** The served model's context length: /api/models, else the current profile's setting. */
export function useMaxModelLen(): number | null {
  const profileLen = useModelStore((s) => {
    const id = s.status?.current_profile;
    return (id && s.status?.available_profiles[id]?.max_model_len) || null;
  });
  const current = useModelStore((s) => s.status?.current_profile ?? null);
  const served = useModelStore((s) => s.servedMaxModelLen);
  useEffect(() => {
    void refreshServedModels();
  }, [current]);
  return served ?? profileLen;
}

/**
 * Whether sending `draft` now would overflow the model's context: the conversation so far, the
 * system prompt, the new message and the answer's max_tokens together. `tokens` is the estimate.
 */
export function useContextCheck(draft: string): { tokens: number; maxLen: number | null; tooLong: boolean } {
  const maxLen = useMaxModelLen();
  const messages = useChat((s) => s.messages);
  const systemPrompt = useChat((s) => s.systemPrompt);
  const maxTokens = useChat((s) => s.maxTokens);
  if (!maxLen || !draft) return { tokens: 0, maxLen, tooLong: false };
  const texts = [systemPrompt, ...messages.map((m) => m.content), draft].filter(Boolean);
  const tokens = estimatePromptTokens(texts) + (maxTokens ?? 0);
  return { tokens, maxLen, tooLong: tokens > maxLen };
}
