import { create } from 'zustand';
import { configureAuth } from '../api/client';

/**
 * The session: the JWT lives in sessionStorage (this tab only, gone when it closes; never
 * localStorage, never a cookie readable by other tabs' scripts) and in memory.
 */
const STORAGE_KEY = 'vllm-chat.session';

export interface Session {
  token: string;
  username: string;
  role: string;
  /** epoch ms */
  expiresAt: number;
}

interface AuthState {
  session: Session | null;
  /** the last session ended by expiry or a 401 (the login page says so) */
  expired: boolean;
  login: (token: string, expiresInS: number) => void;
  logout: (reason?: 'expired') => void;
}

function decodeClaims(token: string): { sub?: string; role?: string; exp?: number } {
  try {
    const payload = token.split('.')[1] ?? '';
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(decodeURIComponent(escape(json))) as { sub?: string; role?: string; exp?: number };
  } catch {
    return {};
  }
}

function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const session = JSON.parse(raw) as Session;
    return session.expiresAt > Date.now() ? session : null;
  } catch {
    return null;
  }
}

let expiryTimer: ReturnType<typeof setTimeout> | undefined;

function scheduleExpiry(session: Session | null): void {
  clearTimeout(expiryTimer);
  if (!session) return;
  // setTimeout holds 32-bit ms; a session longer than ~24 days is checked again later
  const delay = Math.min(session.expiresAt - Date.now(), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => {
    if (useAuth.getState().session?.token === session.token) useAuth.getState().logout('expired');
  }, Math.max(0, delay));
}

export const useAuth = create<AuthState>((set) => ({
  session: loadSession(),
  expired: false,
  login: (token, expiresInS) => {
    const claims = decodeClaims(token);
    const expiresAt = claims.exp ? claims.exp * 1000 : Date.now() + expiresInS * 1000;
    const session: Session = {
      token,
      username: claims.sub ?? '',
      role: claims.role ?? 'user',
      expiresAt,
    };
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    } catch {
      // memory only
    }
    scheduleExpiry(session);
    set({ session, expired: false });
  },
  logout: (reason) => {
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch {
      // nothing stored
    }
    scheduleExpiry(null);
    set({ session: null, expired: reason === 'expired' });
  },
}));

scheduleExpiry(useAuth.getState().session);

configureAuth({
  token: () => useAuth.getState().session?.token ?? null,
  onUnauthorized: () => {
    if (useAuth.getState().session) useAuth.getState().logout('expired');
  },
});

export const isAdmin = (session: Session | null): boolean => session?.role === 'admin';
