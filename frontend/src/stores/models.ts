import { create } from 'zustand';
import { modelsApi } from '../api/endpoints';
import { ApiError } from '../api/errors';
import type { HardwareRecommendations, ModelStatusResponse, ProfileView, ReasonDetail } from '../api/types';

export type SwitchOutcome = 'success' | 'failed' | 'rolled_back';

export interface SwitchResult {
  target: string;
  outcome: SwitchOutcome;
  error: string | null;
  /** the gateway's error code when the request itself was refused (the UI words it) */
  code?: string;
  reasons?: string[];
  details?: ReasonDetail[];
  at: number;
}

/** The model manager as the UI sees it: one store shared by the header and the admin page. */
export interface ModelState {
  status: ModelStatusResponse | null;
  recommendations: HardwareRecommendations | null;
  /** the profile a switch started from this tab is going to */
  switchingTo: string | null;
  lastResult: SwitchResult | null;
  error: ApiError | null;
  /** false when the gateway has no model manager (404) */
  available: boolean;
  /** the served model's context length from /api/models (null: not known) */
  servedMaxModelLen: number | null;
}

export const initialModelState: ModelState = {
  status: null,
  recommendations: null,
  switchingTo: null,
  lastResult: null,
  error: null,
  available: true,
  servedMaxModelLen: null,
};

export const useModelStore = create<ModelState>(() => ({ ...initialModelState }));

const TERMINAL = new Set(['running', 'failed']);

// A status fetched before the switch request was accepted may still describe the previous
// switch (it stays in the status until the next one): such a response never ends this one.
let acceptedAt = 0;

/** Whether the status says a switch is under way (from this tab or another). */
export function switchInProgress(status: ModelStatusResponse | null): boolean {
  if (!status) return false;
  if (status.status === 'switching') return true;
  return Boolean(status.switch && !TERMINAL.has(status.switch.phase));
}

export async function refreshModelStatus(signal?: AbortSignal): Promise<ModelStatusResponse | null> {
  const askedAt = performance.now();
  try {
    const status = await modelsApi.status(signal);
    applyStatus(status, askedAt >= acceptedAt);
    return status;
  } catch (err) {
    if ((err as { name?: string }).name === 'AbortError') return null;
    const error = err instanceof ApiError ? err : new ApiError(0, 'network_error', String(err));
    useModelStore.setState({ error, available: error.status !== 404 });
    return null;
  }
}

/** The served model's context length (works without a model manager too). */
export async function refreshServedModels(): Promise<void> {
  try {
    const { models } = await modelsApi.served();
    useModelStore.setState({ servedMaxModelLen: models[0]?.max_model_len ?? null });
  } catch {
    // unknown: the prompt is then not checked before sending
  }
}

export async function refreshRecommendations(): Promise<void> {
  try {
    useModelStore.setState({ recommendations: await modelsApi.recommendations() });
  } catch {
    // compatibility then comes from the profiles alone
  }
}

function applyStatus(status: ModelStatusResponse, fresh: boolean): void {
  const { switchingTo } = useModelStore.getState();
  const patch: Partial<ModelState> = { status, error: null, available: true };
  const sw = status.switch;
  if (fresh && switchingTo && sw && sw.target === switchingTo && TERMINAL.has(sw.phase) && status.status !== 'switching') {
    const record = status.history?.find((h) => h.to_profile === switchingTo);
    let outcome: SwitchOutcome = sw.phase === 'running' ? 'success' : 'failed';
    if (outcome === 'failed' && record?.outcome === 'rolled_back') outcome = 'rolled_back';
    patch.switchingTo = null;
    patch.lastResult = { target: switchingTo, outcome, error: sw.error, at: Date.now() };
  }
  useModelStore.setState(patch);
}

export async function requestSwitch(profileId: string): Promise<void> {
  useModelStore.setState({ switchingTo: profileId, lastResult: null, error: null });
  acceptedAt = Number.POSITIVE_INFINITY;
  try {
    await modelsApi.switchTo(profileId);
    acceptedAt = performance.now();
  } catch (err) {
    acceptedAt = 0;
    const error = err instanceof ApiError ? err : new ApiError(0, 'network_error', String(err));
    useModelStore.setState({
      switchingTo: null,
      error,
      lastResult: {
        target: profileId,
        outcome: 'failed',
        error: error.message,
        code: error.code,
        reasons: error.reasons,
        details: error.details as ReasonDetail[],
        at: Date.now(),
      },
    });
  }
}

export interface ProfileChoice {
  id: string;
  name: string;
  description: string;
  compatible: boolean;
  reasons: string[];
  /** the reasons as data, index for index (may be shorter: an older gateway sends none) */
  details: ReasonDetail[];
}

/** Profiles merged with the hardware recommendations (either may call one incompatible). */
export function profileChoices(
  profiles: Record<string, ProfileView> | undefined,
  recommendations: HardwareRecommendations | null,
): ProfileChoice[] {
  const ids = new Set(Object.keys(profiles ?? {}));
  const incompatible = new Set(recommendations?.incompatible_profiles ?? []);
  const recommended = recommendations?.recommended_profiles ?? [];
  const rank = (id: string) => {
    const i = recommended.indexOf(id);
    return i < 0 ? Number.MAX_SAFE_INTEGER : i;
  };
  return [...ids]
    .map((id) => {
      const p = profiles?.[id];
      const fromRecommendations = recommendations?.incompatible_reasons?.[id];
      const reasons = fromRecommendations ?? p?.incompatible_reasons ?? [];
      const details = (fromRecommendations ? recommendations?.incompatible_details?.[id] : p?.incompatible_details) ?? [];
      return {
        id,
        name: p?.name || id,
        description: p?.description ?? '',
        compatible: !incompatible.has(id) && p?.compatible !== false,
        reasons,
        details,
      };
    })
    .sort((a, b) => Number(b.compatible) - Number(a.compatible) || rank(a.id) - rank(b.id));
}
