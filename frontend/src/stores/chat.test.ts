import { describe, expect, it } from 'vitest';
import type { MessageOut } from '../api/types';
import { toUiMessages, variantsOf, withVariant } from './chat';

const stored = (id: number, content: string, reasoning: string | null): MessageOut => ({
  id,
  role: 'assistant',
  content,
  reasoning,
  reasoning_ms: reasoning ? 1200 : null,
  model: 'm',
  prompt_tokens: null,
  completion_tokens: null,
  status: 'complete',
  created_at: '2026-11-26T00:00:00Z',
});

describe('variants of a reasoning model', () => {
  it('each variant shows its own chain of thought', () => {
    const thought = stored(1, 'First.', 'Thinking it over.');
    const plain = stored(2, 'Second.', null);
    const [message] = toUiMessages([{ ...plain, variants: [thought, plain], variant_index: 1 }]);
    expect(message).toMatchObject({ content: 'Second.', variantIndex: 1 });
    expect(message!.reasoning).toBeUndefined();
    const first = withVariant(message!, 0);
    expect(first).toMatchObject({ id: 1, content: 'First.', reasoning: 'Thinking it over.', reasoningMs: 1200 });
    const back = withVariant(first, 1);
    expect(back.content).toBe('Second.');
    expect(back.reasoning).toBeUndefined();
  });

  it('an answer never regenerated is its only variant, thoughts included', () => {
    const [message] = toUiMessages([stored(5, 'Only.', 'Hmm.')]);
    expect(variantsOf(message!)).toEqual([
      { id: 5, content: 'Only.', status: 'complete', reasoning: 'Hmm.', reasoningMs: 1200 },
    ]);
  });
});
