import { apiUrl, authHeaders } from './client';
import { ApiError, errorFromBody, errorFromResponse } from './errors';
import { parseSSE } from './sse';
import type { ChatRequestBody } from './types';

export type ChatEvent =
  | { type: 'conversation'; id: string }
  | { type: 'delta'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'finish'; reason: string }
  | { type: 'usage'; promptTokens: number; completionTokens: number };

interface Chunk {
  conversation_id?: string;
  error?: unknown;
  choices?: {
    delta?: { content?: string | null; reasoning?: string | null; reasoning_content?: string | null };
    finish_reason?: string | null;
  }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
}

/**
 * POST /api/chat and yield what the answer is made of. An HTTP error before the stream, or an
 * error event inside it, is thrown as ApiError; aborting `signal` throws the AbortError.
 */
export async function* streamChat(
  body: ChatRequestBody,
  signal: AbortSignal,
  onUnauthorized?: () => void,
): AsyncGenerator<ChatEvent, void, undefined> {
  let res: Response;
  try {
    res = await fetch(apiUrl('/api/chat'), {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
  } catch (err) {
    if ((err as { name?: string }).name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', (err as Error).message || 'network error');
  }
  const headerId = res.headers.get('X-Conversation-ID');
  if (!res.ok || !res.body) {
    if (res.status === 401) onUnauthorized?.();
    // the gateway stored the question before failing: a retry continues that conversation
    if (headerId) yield { type: 'conversation', id: headerId };
    throw await errorFromResponse(res);
  }
  if (headerId) yield { type: 'conversation', id: headerId };
  for await (const payload of parseSSE(res.body)) {
    if (payload === '[DONE]') return;
    let chunk: Chunk;
    try {
      chunk = JSON.parse(payload) as Chunk;
    } catch {
      continue; // not ours to interpret
    }
    if (chunk.error) throw errorFromBody(502, chunk);
    if (chunk.conversation_id && !headerId) yield { type: 'conversation', id: chunk.conversation_id };
    const choice = chunk.choices?.[0];
    // vLLM's reasoning parser: `reasoning` today, `reasoning_content` in older releases
    const thought = choice?.delta?.reasoning ?? choice?.delta?.reasoning_content;
    if (thought) yield { type: 'reasoning', text: thought };
    const text = choice?.delta?.content;
    if (text) yield { type: 'delta', text };
    if (choice?.finish_reason) yield { type: 'finish', reason: choice.finish_reason };
    if (chunk.usage) {
      yield {
        type: 'usage',
        promptTokens: chunk.usage.prompt_tokens ?? 0,
        completionTokens: chunk.usage.completion_tokens ?? 0,
      };
    }
  }
}
