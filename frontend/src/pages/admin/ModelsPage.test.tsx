import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ModelStatusResponse } from '../../api/types';
import { useLangStore } from '../../i18n';
import { initialModelState, useModelStore } from '../../stores/models';
import ModelsPage from './ModelsPage';

const switching: ModelStatusResponse = {
  current_profile: 'a',
  status: 'switching',
  available_profiles: { a: { id: 'a', name: 'Model A', compatible: true }, b: { id: 'b', name: 'Model B', compatible: true } },
  switch: { target: 'b', previous: 'a', phase: 'loading', started_at: '2024-01-01T00:00:00Z', finished_at: null, error: null },
  history: [],
};
const running: ModelStatusResponse = { ...switching, status: 'running', switch: null };

let current = running;
const fetchMock = vi.fn((url: string, init?: RequestInit) => {
  const body = url.endsWith('/reload') && init?.method === 'POST' ? { success: true } : current;
  return Promise.resolve(new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } }));
});

beforeEach(() => {
  useLangStore.setState({ lang: 'en' });
  vi.stubGlobal('fetch', fetchMock);
  fetchMock.mockClear();
  useModelStore.setState({ ...initialModelState });
});
afterEach(() => vi.unstubAllGlobals());

describe('ModelsPage', () => {
  it('names the target in the status card while a switch runs', async () => {
    current = switching;
    useModelStore.setState({ ...initialModelState, status: switching, switchingTo: 'b' });
    render(<ModelsPage />);
    expect(await screen.findByTestId('status-switch-target')).toHaveTextContent('Switching to Model B...');
  });

  it('says what "Reload profiles" did', async () => {
    current = running;
    const user = userEvent.setup();
    render(<ModelsPage />);
    await user.click(screen.getByTestId('reload-profiles'));
    expect(await screen.findByTestId('reload-note')).toHaveTextContent('Reloaded 2 profiles');
  });

  it('asks before switching, and switches nothing when cancelled', async () => {
    current = running;
    const user = userEvent.setup();
    useModelStore.setState({ ...initialModelState, status: running });
    render(<ModelsPage />);
    await user.click(await screen.findByTestId('switch-to-b'));
    expect(screen.getByTestId('confirm-dialog')).toHaveTextContent('Model B');
    await user.click(screen.getByText('Cancel'));
    await waitFor(() => expect(screen.queryByTestId('confirm-dialog')).not.toBeInTheDocument());
    expect(fetchMock.mock.calls.some(([url]) => String(url).endsWith('/api/models/switch'))).toBe(false);
  });
});
