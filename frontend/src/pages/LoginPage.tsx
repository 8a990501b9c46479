import { Bot, Loader2 } from 'lucide-react';
import { useEffect, useState } from 'react';
import { authApi } from '../api/endpoints';
import { ApiError } from '../api/errors';
import { LanguageSwitcher } from '../components/layout/LanguageSwitcher';
import { useT } from '../i18n';
import { anyErrorText } from '../i18n/serverErrors';
import { useAuth } from '../stores/auth';

export function LoginPage() {
  const t = useT();
  const expired = useAuth((s) => s.expired);
  const login = useAuth((s) => s.login);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  // a lockout (429 with Retry-After): the moment the form may be sent again, and a countdown
  const [lockedUntil, setLockedUntil] = useState<number | null>(null);
  const [now, setNow] = useState(() => Date.now());
  const lockLeft = lockedUntil ? Math.max(0, Math.ceil((lockedUntil - now) / 1000)) : 0;

  useEffect(() => {
    if (!lockedUntil) return;
    const timer = setInterval(() => {
      setNow(Date.now());
      if (Date.now() >= lockedUntil) {
        clearInterval(timer);
        setLockedUntil(null);
        setError(null);
      }
    }, 250);
    return () => clearInterval(timer);
  }, [lockedUntil]);

  const submit = async () => {
    if (lockLeft > 0) return;
    setBusy(true);
    setError(null);
    try {
      const token = await authApi.login(username.trim(), password);
      login(token.access_token, token.expires_in);
    } catch (err) {
      setError(err);
      if (err instanceof ApiError && err.status === 429 && err.retryAfter) {
        setNow(Date.now());
        setLockedUntil(Date.now() + err.retryAfter * 1000);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="flex min-h-[100dvh] items-center justify-center bg-gradient-to-br from-slate-50 to-indigo-50 p-4 dark:from-slate-950 dark:to-indigo-950/40">
      <form
        data-testid="login-form"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
        className="flex w-full max-w-sm flex-col gap-4 rounded-2xl border border-slate-200 bg-white p-6 shadow-xl dark:border-slate-800 dark:bg-slate-900"
      >
        <div className="flex items-center justify-between">
          <h1 className="flex items-center gap-2 text-lg font-semibold">
            <Bot className="h-6 w-6 text-indigo-600" aria-hidden />
            {t('appName')}
          </h1>
          <LanguageSwitcher />
        </div>
        {expired && (
          <p role="status" data-testid="session-expired" className="rounded-lg bg-amber-50 px-3 py-2 text-sm text-amber-900 dark:bg-amber-900/30 dark:text-amber-100">
            {t('sessionExpired')}
          </p>
        )}
        <label className="flex flex-col gap-1 text-sm">
          {t('username')}
          <input data-testid="login-username" autoComplete="username" autoFocus required value={username} onChange={(e) => setUsername(e.target.value)} className="rounded-lg border border-slate-300 bg-white px-3 py-2 dark:border-slate-700 dark:bg-slate-950" />
        </label>
        <label className="flex flex-col gap-1 text-sm">
          {t('password')}
          <input data-testid="login-password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} className="rounded-lg border border-slate-300 bg-white px-3 py-2 dark:border-slate-700 dark:bg-slate-950" />
        </label>
        {lockLeft > 0 ? (
          <p role="alert" data-testid="login-error" data-code="rate_limited" className="text-sm text-red-600">
            <span data-testid="login-countdown">{t('loginLocked', { s: lockLeft })}</span>
          </p>
        ) : (
          error !== null && (
            <p role="alert" data-testid="login-error" className="text-sm text-red-600">
              {anyErrorText(t, error)}
            </p>
          )
        )}
        <button type="submit" data-testid="login-submit" disabled={busy || lockLeft > 0} className="flex items-center justify-center gap-2 rounded-lg bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-500 disabled:opacity-60">
          {busy && <Loader2 className="h-4 w-4 animate-spin" aria-hidden />}
          {busy ? t('loggingIn') : t('login')}
        </button>
      </form>
    </div>
  );
}
