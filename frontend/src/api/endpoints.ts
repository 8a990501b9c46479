/** One function per gateway route the UI uses. */
import { apiFetch, apiJson } from './client';
import type {
  ConversationDetail,
  ConversationOut,
  ConversationPage,
  HardwareRecommendations,
  ModelStatusResponse,
  SwitchResponse,
  TokenResponse,
  UsageReport,
  UserOut,
  UserSettings,
} from './types';

export const authApi = {
  login: (username: string, password: string) =>
    apiJson<TokenResponse>('/api/auth/login', {
      method: 'POST',
      body: { username, password },
      authenticated: false,
    }),
  me: () => apiJson<UserOut>('/api/auth/me'),
};

export const conversationsApi = {
  list: (params: { limit?: number; cursor?: string | null; q?: string }, signal?: AbortSignal) => {
    const qs = new URLSearchParams();
    qs.set('limit', String(params.limit ?? 30));
    if (params.cursor) qs.set('cursor', params.cursor);
    if (params.q) qs.set('q', params.q);
    return apiJson<ConversationPage>(`/api/conversations?${qs}`, { signal });
  },
  get: (id: string, signal?: AbortSignal) =>
    apiJson<ConversationDetail>(`/api/conversations/${encodeURIComponent(id)}`, { signal }),
  update: (id: string, patch: { title?: string; system_prompt?: string | null }) =>
    apiJson<ConversationOut>(`/api/conversations/${encodeURIComponent(id)}`, {
      method: 'PATCH',
      body: patch,
    }),
  chooseVariant: (id: string, messageId: number) =>
    apiJson<ConversationDetail>(
      `/api/conversations/${encodeURIComponent(id)}/messages/${messageId}/active`,
      { method: 'PUT' },
    ),
  remove: (id: string) =>
    apiJson<void>(`/api/conversations/${encodeURIComponent(id)}`, { method: 'DELETE' }),
  exportFile: (id: string, format: 'json' | 'md') =>
    apiFetch(`/api/conversations/${encodeURIComponent(id)}/export?format=${format}`),
};

export const settingsApi = {
  get: () => apiJson<UserSettings>('/api/users/me/settings'),
  put: (settings: UserSettings) =>
    apiJson<UserSettings>('/api/users/me/settings', { method: 'PUT', body: settings }),
};

export const modelsApi = {
  /** the models the gateway serves now, with their context length */
  served: () =>
    apiJson<{ models: { id: string; name: string; status: string; max_model_len?: number | null }[] }>('/api/models'),
  status: (signal?: AbortSignal) => apiJson<ModelStatusResponse>('/api/models/status', { signal }),
  recommendations: (signal?: AbortSignal) =>
    apiJson<HardwareRecommendations>('/api/models/hardware-recommendations', { signal }),
  switchTo: (profileId: string) =>
    apiJson<SwitchResponse>('/api/models/switch', { method: 'POST', body: { profile_id: profileId } }),
  reload: () => apiJson<{ success: boolean }>('/api/models/reload', { method: 'POST' }),
};

export interface UsageQuery {
  from?: string;
  to?: string;
  group_by: 'day' | 'model' | 'user';
}

export const usageApi = {
  report: (query: UsageQuery, admin: boolean) => {
    const qs = new URLSearchParams({ group_by: query.group_by });
    if (query.from) qs.set('from', query.from);
    if (query.to) qs.set('to', query.to);
    return apiJson<UsageReport>(`${admin ? '/api/admin/usage' : '/api/usage'}?${qs}`);
  },
  exportCsv: (query: { from?: string; to?: string; all: boolean }) => {
    const qs = new URLSearchParams();
    if (query.from) qs.set('from', query.from);
    if (query.to) qs.set('to', query.to);
    if (query.all) qs.set('all', 'true');
    return apiFetch(`/api/usage/export.csv?${qs}`, { headers: { Accept: 'text/csv' } });
  },
};

export interface UserPatch {
  email?: string | null;
  password?: string;
  role?: 'admin' | 'user';
  disabled?: boolean;
  requests_per_minute?: number | null;
  max_concurrent_streams?: number | null;
  tokens_per_day?: number | null;
}

export const usersApi = {
  list: () => apiJson<{ users: UserOut[]; total: number }>('/api/admin/users?limit=500'),
  create: (body: { username: string; password: string; email?: string; role: 'admin' | 'user' }) =>
    apiJson<UserOut>('/api/admin/users', { method: 'POST', body }),
  update: (id: number, patch: UserPatch) =>
    apiJson<UserOut>(`/api/admin/users/${id}`, { method: 'PATCH', body: patch }),
  remove: (id: number) => apiJson<void>(`/api/admin/users/${id}`, { method: 'DELETE' }),
};

/** Saves a fetched file through a temporary object URL (works with the Authorization header). */
export async function downloadResponse(res: Response, fallbackName: string): Promise<void> {
  const disposition = res.headers.get('Content-Disposition') ?? '';
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName;
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
