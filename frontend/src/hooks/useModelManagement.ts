import { useCallback, useEffect } from 'react';
import {
  profileChoices,
  refreshModelStatus,
  refreshRecommendations,
  requestSwitch,
  switchInProgress,
  useModelStore,
} from '../stores/models';

const FAST_POLL_MS = 500;

/**
 * The model manager for components: current model, status, profiles with compatibility, and
 * switching. While a switch runs the status is polled quickly until it ends; `pollMs` adds a
 * slower live refresh (the admin page).
 */
export function useModelManagement(opts: { pollMs?: number; autoLoad?: boolean } = {}) {
  const { pollMs, autoLoad = false } = opts;
  const state = useModelStore();
  const switching = state.switchingTo !== null || switchInProgress(state.status);

  const fetchModelStatus = useCallback(async () => {
    await refreshModelStatus();
  }, []);

  const switchModel = useCallback(async (profileId: string) => {
    await requestSwitch(profileId);
    await refreshModelStatus();
  }, []);

  useEffect(() => {
    if (!autoLoad) return;
    void refreshModelStatus();
    void refreshRecommendations();
  }, [autoLoad]);

  useEffect(() => {
    const interval = switching ? FAST_POLL_MS : pollMs;
    if (!interval || (!autoLoad && !switching)) return;
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout>;
    const tick = async () => {
      await refreshModelStatus(controller.signal);
      if (!controller.signal.aborted) timer = setTimeout(tick, interval);
    };
    timer = setTimeout(tick, interval);
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [switching, pollMs, autoLoad]);

  const status = state.status;
  const currentModel = status?.current_profile ?? null;
  return {
    currentModel,
    currentModelName:
      (currentModel && status?.available_profiles[currentModel]?.name) || status?.served_model || currentModel,
    status: status?.status ?? null,
    details: status,
    profiles: profileChoices(status?.available_profiles, state.recommendations),
    switchingTo: state.switchingTo ?? (switchInProgress(status) ? (status?.switch?.target ?? null) : null),
    phase: status?.switch?.phase ?? null,
    isSwitching: switching,
    lastResult: state.lastResult,
    error: state.error,
    available: state.available,
    fetchModelStatus,
    fetchRecommendations: refreshRecommendations,
    switchModel,
  };
}
