import { act, renderHook, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ModelStatusResponse } from '../api/types';
import { initialModelState, useModelStore } from '../stores/models';
import { useModelManagement } from './useModelManagement';

const fetchMock = vi.fn();
const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

const profiles = {
  'deepseek-r1-distill-qwen-14b': { id: 'deepseek-r1-distill-qwen-14b', name: 'DeepSeek R1 Distill Qwen 14B', compatible: true },
  'phi3-mini': { id: 'phi3-mini', name: 'Phi-3 Mini 3.8B', compatible: true },
  'llama3-70b-instruct': { id: 'llama3-70b-instruct', name: 'Llama 3 70B', compatible: false, incompatible_reasons: ['needs 2 GPUs'] },
};

function status(patch: Partial<ModelStatusResponse> = {}): ModelStatusResponse {
  return { current_profile: 'deepseek-r1-distill-qwen-14b', status: 'running', available_profiles: profiles, switch: null, history: [], ...patch };
}

beforeEach(() => {
  vi.stubGlobal('fetch', fetchMock);
  fetchMock.mockReset();
  useModelStore.setState({ ...initialModelState });
});
afterEach(() => vi.unstubAllGlobals());

describe('useModelManagement', () => {
  it('fetches the model status', async () => {
    fetchMock.mockResolvedValueOnce(json(status()));
    const { result } = renderHook(() => useModelManagement());
    await act(() => result.current.fetchModelStatus());
    expect(result.current.currentModel).toBe('deepseek-r1-distill-qwen-14b');
    expect(result.current.status).toBe('running');
    expect(result.current.profiles.find((p) => p.id === 'llama3-70b-instruct')).toMatchObject({
      compatible: false,
      reasons: ['needs 2 GPUs'],
    });
    expect(fetchMock.mock.calls[0]![0]).toMatch(/\/api\/models\/status$/);
  });

  it('switches: POSTs the profile id, polls while switching and reports completion', async () => {
    const switching = status({
      status: 'switching',
      switch: { target: 'phi3-mini', previous: 'deepseek-r1-distill-qwen-14b', phase: 'loading', started_at: '', finished_at: null, error: null },
    });
    const done = status({
      current_profile: 'phi3-mini',
      switch: { target: 'phi3-mini', previous: 'deepseek-r1-distill-qwen-14b', phase: 'running', started_at: '', finished_at: '', error: null },
    });
    fetchMock
      .mockResolvedValueOnce(json({ success: true, message: 'switching', status: 'switching', target: 'phi3-mini' }, 202))
      .mockResolvedValueOnce(json(switching))
      .mockResolvedValue(json(done));
    const { result } = renderHook(() => useModelManagement());
    await act(() => result.current.switchModel('phi3-mini'));

    const [url, init] = fetchMock.mock.calls[0]!;
    expect(url).toMatch(/\/api\/models\/switch$/);
    expect(init).toMatchObject({ method: 'POST', body: JSON.stringify({ profile_id: 'phi3-mini' }) });
    expect(result.current.isSwitching).toBe(true);
    expect(result.current.phase).toBe('loading');

    await waitFor(() => expect(result.current.lastResult?.outcome).toBe('success'), { timeout: 3000 });
    expect(result.current.isSwitching).toBe(false);
    expect(result.current.currentModel).toBe('phi3-mini');
  });

  it('a refused switch (422 incompatible) ends at once with the reason', async () => {
    fetchMock
      .mockResolvedValueOnce(
        json({ error: { code: 'incompatible_hardware', message: 'cannot run here', request_id: 'r', reasons: ['needs 2 GPUs'] } }, 422),
      )
      .mockResolvedValue(json(status()));
    const { result } = renderHook(() => useModelManagement());
    await act(() => result.current.switchModel('llama3-70b-instruct'));
    expect(result.current.isSwitching).toBe(false);
    expect(result.current.lastResult).toMatchObject({ outcome: 'failed', error: 'cannot run here', reasons: ['needs 2 GPUs'] });
  });
});
