import { fireEvent, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useLangStore } from '../../i18n';
import { useChat } from '../../stores/chat';
import { useSettings } from '../../stores/settings';
import { ChatSettingsPanel } from './ChatSettingsPanel';

const fetchMock = vi.fn((_url: string, init?: RequestInit) =>
  Promise.resolve(new Response(init?.body ?? JSON.stringify({ id: 'c1' }), { status: 200, headers: { 'Content-Type': 'application/json' } })),
);

beforeEach(() => {
  useLangStore.setState({ lang: 'en' });
  vi.stubGlobal('fetch', fetchMock);
  fetchMock.mockClear();
  useChat.getState().reset('c1');
  useChat.getState().set({ conversationId: 'c1', systemPrompt: '', temperature: null, maxTokens: null });
  useSettings.setState({ defaults: null });
});
afterEach(() => vi.unstubAllGlobals());

function sentBody(method: string): Record<string, unknown> {
  const call = fetchMock.mock.calls.find(([, init]) => init?.method === method);
  expect(call, `a ${method} request`).toBeTruthy();
  return JSON.parse(String(call![1]!.body)) as Record<string, unknown>;
}

describe('ChatSettingsPanel', () => {
  it('closes on Escape', () => {
    const onClose = vi.fn();
    render(<ChatSettingsPanel onClose={onClose} />);
    fireEvent.keyDown(document, { key: 'Escape' });
    expect(onClose).toHaveBeenCalledTimes(1);
  });

  it('after saving the system prompt the button says Saved, until the text changes', async () => {
    const user = userEvent.setup();
    render(<ChatSettingsPanel onClose={vi.fn()} />);
    await user.type(screen.getByTestId('system-prompt'), 'Answer in haiku');
    await user.click(screen.getByTestId('save-system-prompt'));
    await waitFor(() => expect(screen.getByTestId('save-system-prompt')).toHaveTextContent('Saved'));
    expect(sentBody('PATCH')).toEqual({ system_prompt: 'Answer in haiku' });
    await user.type(screen.getByTestId('system-prompt'), '!');
    expect(screen.getByTestId('save-system-prompt')).toHaveTextContent(/^Save$/);
  });

  it('an untouched temperature claims no number and is saved as null', async () => {
    const user = userEvent.setup();
    render(<ChatSettingsPanel onClose={vi.fn()} />);
    expect(screen.getByTestId('temperature-value')).toHaveTextContent("model's default");
    expect(screen.getByTestId('temperature-value')).not.toHaveTextContent('0.7');
    await user.click(screen.getByTestId('save-defaults'));
    await waitFor(() => expect(screen.getByRole('status')).toHaveTextContent('Default saved'));
    expect(sentBody('PUT').temperature).toBeNull();
  });

  it('a moved temperature shows its value, is saved, and can go back to the default', async () => {
    const user = userEvent.setup();
    render(<ChatSettingsPanel onClose={vi.fn()} />);
    fireEvent.change(screen.getByTestId('temperature'), { target: { value: '0.3' } });
    expect(screen.getByTestId('temperature-value')).toHaveTextContent('0.30');
    await user.click(screen.getByTestId('save-defaults'));
    await waitFor(() => expect(sentBody('PUT').temperature).toBe(0.3));
    await user.click(screen.getByTestId('temperature-reset'));
    expect(screen.getByTestId('temperature-value')).toHaveTextContent("model's default");
    expect(useChat.getState().temperature).toBeNull();
  });
});
