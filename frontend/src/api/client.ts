import { ApiError, errorFromResponse } from './errors';

/** `VITE_API_BASE` points the UI at a gateway elsewhere; default: the page's own origin. */
export const API_BASE = (import.meta.env.VITE_API_BASE ?? '').replace(/\/+$/, '');

export function apiUrl(path: string): string {
  return `${API_BASE}${path}`;
}

interface AuthHooks {
  token: () => string | null;
  /** a 401 on an authenticated request: the session is over */
  onUnauthorized: () => void;
}

let auth: AuthHooks = { token: () => null, onUnauthorized: () => {} };

export function configureAuth(hooks: AuthHooks): void {
  auth = hooks;
}

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const token = auth.token();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  /** default true: a 401 ends the session */
  authenticated?: boolean;
}

/** fetch with the token, JSON in and out, and every failure as an ApiError. */
export async function apiFetch(path: string, opts: RequestOptions = {}): Promise<Response> {
  const { method = 'GET', body, signal, authenticated = true } = opts;
  const headers: Record<string, string> = { Accept: 'application/json', ...opts.headers };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(apiUrl(path), {
      method,
      headers: authenticated ? authHeaders(headers) : headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if ((err as { name?: string }).name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', (err as Error).message || 'network error');
  }
  if (!res.ok) {
    const error = await errorFromResponse(res);
    if (res.status === 401 && authenticated) auth.onUnauthorized();
    throw error;
  }
  return res;
}

export async function apiJson<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await apiFetch(path, opts);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}
