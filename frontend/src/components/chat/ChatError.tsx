import { AlertTriangle, RotateCcw } from 'lucide-react';
import { useEffect, useState } from 'react';
import { useT } from '../../i18n';
import type { ChatFailure } from '../../stores/chat';
import { describeError } from './errorText';

/** A failed answer, inline under the conversation: what happened, the wait, and a retry. */
export function ChatError({ failure, onRetry }: { failure: ChatFailure; onRetry: () => void }) {
  const t = useT();
  const secondsLeft = () => (failure.retryAt ? Math.max(0, Math.ceil((failure.retryAt - Date.now()) / 1000)) : 0);
  const [left, setLeft] = useState(secondsLeft);

  useEffect(() => {
    if (!failure.retryAt) return;
    setLeft(secondsLeft());
    const timer = setInterval(() => {
      const s = secondsLeft();
      setLeft(s);
      if (s <= 0) clearInterval(timer);
    }, 250);
    return () => clearInterval(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [failure]);

  const waitS = failure.error.retryAfter;
  return (
    <div
      role="alert"
      data-testid="chat-error"
      data-code={failure.error.code}
      className="flex flex-col gap-2 rounded-xl border border-red-200 bg-red-50 px-4 py-3 text-sm text-red-900 sm:flex-row sm:items-center dark:border-red-900 dark:bg-red-950/40 dark:text-red-100"
    >
      <AlertTriangle className="h-5 w-5 shrink-0 text-red-500" aria-hidden />
      <div className="min-w-0 flex-1">
        <p>{describeError(t, failure.error, waitS)}</p>
        {left > 0 && (
          <p data-testid="retry-countdown" className="text-xs opacity-80">
            {t('retryIn', { s: left })}
          </p>
        )}
      </div>
      <button
        type="button"
        data-testid="retry-button"
        disabled={left > 0}
        onClick={onRetry}
        className="inline-flex items-center gap-1.5 self-start rounded-lg border border-red-300 bg-white px-3 py-1.5 text-sm font-medium hover:bg-red-100 disabled:cursor-not-allowed disabled:opacity-50 sm:self-auto dark:border-red-800 dark:bg-red-950 dark:hover:bg-red-900"
      >
        <RotateCcw className="h-4 w-4" aria-hidden />
        {t('retry')}
      </button>
    </div>
  );
}
