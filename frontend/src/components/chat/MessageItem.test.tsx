import { render, screen } from '@testing-library/react';
import { beforeEach, describe, expect, it } from 'vitest';
import { useLangStore } from '../../i18n';
import { toUiMessages } from '../../stores/chat';
import { MessageItem } from './MessageItem';

beforeEach(() => useLangStore.setState({ lang: 'en' }));

describe('MessageItem thinking block', () => {
  it('shows a reloaded answer with its thinking collapsed, with the duration', () => {
    const [message] = toUiMessages([
      {
        id: 7,
        role: 'assistant',
        content: 'The answer.',
        reasoning: 'First I considered…',
        reasoning_ms: 3200,
        model: 'm',
        prompt_tokens: 1,
        completion_tokens: 2,
        status: 'complete',
        created_at: '2026-11-26T00:00:00Z',
      },
    ]);
    render(
      <MessageItem role="assistant" content={message!.content} reasoning={message!.reasoning} reasoningMs={message!.reasoningMs} status="complete" />,
    );
    const block = screen.getByTestId('thinking');
    expect(block.tagName).toBe('DETAILS');
    expect(block).not.toHaveAttribute('open');
    expect(screen.getByTestId('thinking-label')).toHaveTextContent('Thought for 3.2 s');
    expect(block).toHaveTextContent('First I considered…');
    expect(screen.getByTestId('ai-message')).toHaveTextContent('The answer.');
  });

  it('is open while the model is still thinking', () => {
    render(<MessageItem role="assistant" content="" reasoning="hmm" reasoningMs={null} status="streaming" />);
    expect(screen.getByTestId('thinking')).toHaveAttribute('open');
    expect(screen.getByTestId('thinking-label')).toHaveTextContent('Thinking…');
  });

  it('has no block for an answer without reasoning', () => {
    render(<MessageItem role="assistant" content="plain" status="complete" />);
    expect(screen.queryByTestId('thinking')).toBeNull();
  });
});
