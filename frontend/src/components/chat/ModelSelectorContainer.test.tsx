import { act, render, screen } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useLangStore } from '../../i18n';
import { useAuth } from '../../stores/auth';
import { initialModelState, useModelStore } from '../../stores/models';
import { ModelSelectorContainer } from './ModelSelectorContainer';

const running = {
  current_profile: 'b',
  status: 'running',
  available_profiles: { a: { id: 'a', name: 'Model A' }, b: { id: 'b', name: 'Model B' } },
  switch: { target: 'b', phase: 'running', started_at: '2024-01-01T00:00:00Z', error: null },
  history: [],
};

beforeEach(() => {
  useLangStore.setState({ lang: 'en' });
  vi.stubGlobal(
    'fetch',
    vi.fn(() => Promise.resolve(new Response(JSON.stringify(running), { status: 200, headers: { 'Content-Type': 'application/json' } }))),
  );
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
  useModelStore.setState({ ...initialModelState });
});

describe('ModelSelectorContainer', () => {
  it('shows "Switch complete" for a while, then no more', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    useModelStore.setState({ ...initialModelState, lastResult: { target: 'b', outcome: 'success', error: null, at: Date.now() } });
    render(<ModelSelectorContainer />);
    expect(await screen.findByText('Switch complete')).toBeInTheDocument();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(11_000);
    });
    expect(screen.queryByText('Switch complete')).not.toBeInTheDocument();
  });

  it('names the target of a running switch', async () => {
    useModelStore.setState({ ...initialModelState, switchingTo: 'a', status: { ...running, status: 'switching' } as never });
    render(<ModelSelectorContainer />);
    expect(await screen.findByTestId('switching-label')).toHaveTextContent('Switching to Model A...');
  });

  it('tells an admin that the cluster runs the model servers when switching is off, and offers no switch', async () => {
    useAuth.setState({ session: { token: 't', username: 'admin', role: 'admin', expiresAt: Date.now() + 60_000 } });
    vi.stubGlobal(
      'fetch',
      vi.fn(() =>
        Promise.resolve(
          new Response(JSON.stringify({ ...running, switching_enabled: false }), { status: 200, headers: { 'Content-Type': 'application/json' } }),
        ),
      ),
    );
    useModelStore.setState({ ...initialModelState, status: { ...running, switching_enabled: false } as never });
    render(<ModelSelectorContainer />);
    (await screen.findByTestId('model-selector')).click();
    expect(await screen.findByTestId('switch-locked-note')).toHaveTextContent('The cluster runs the model servers');
    useAuth.setState({ session: null });
  });
});
