import { ChevronLeft, ChevronRight, RefreshCw } from 'lucide-react';
import { memo } from 'react';
import { useT } from '../../i18n';
import type { UiStatus } from '../../stores/chat';
import { CopyButton } from './CopyButton';
import { Markdown } from './Markdown';

interface Props {
  role: 'user' | 'assistant';
  content: string;
  status: UiStatus | 'streaming';
  /** a reasoning model's chain of thought, shown collapsible above the answer */
  reasoning?: string | undefined;
  reasoningMs?: number | null | undefined;
  onRegenerate?: () => void;
  /** a regenerated answer: which of how many variants is shown, and how to show another */
  variant?: { index: number; count: number; onChoose?: (index: number) => void };
}

function Thinking({ text, ms, live }: { text: string; ms: number | null | undefined; live: boolean }) {
  const t = useT();
  const label = ms != null ? t('thoughtFor', { s: (ms / 1000).toFixed(1) }) : live ? t('thinking') : t('thoughts');
  return (
    <details
      data-testid="thinking"
      open={live && ms == null ? true : undefined}
      className="mb-2 rounded-lg border border-slate-200 bg-slate-50 px-3 py-1.5 text-sm dark:border-slate-700 dark:bg-slate-800/40"
    >
      <summary data-testid="thinking-label" className="cursor-pointer select-none text-slate-500">
        {label}
      </summary>
      <div className="mt-1 whitespace-pre-wrap border-l-2 border-slate-300 pl-3 text-slate-600 dark:border-slate-600 dark:text-slate-300">
        {text}
      </div>
    </details>
  );
}

export const MessageItem = memo(function MessageItem({ role, content, status, reasoning, reasoningMs, onRegenerate, variant }: Props) {
  const t = useT();
  if (role === 'user') {
    return (
      <div className="flex justify-end" data-testid="user-message">
        <div className="max-w-[85%] whitespace-pre-wrap break-words rounded-2xl rounded-br-md bg-indigo-600 px-4 py-2.5 text-white shadow-sm">
          {content}
        </div>
      </div>
    );
  }
  const streaming = status === 'streaming';
  return (
    <div className="group flex flex-col gap-1" data-testid="ai-message" data-status={status}>
      {reasoning ? <Thinking text={reasoning} ms={reasoningMs} live={streaming} /> : null}
      <div className="min-w-0 max-w-full break-words text-[15px] leading-relaxed">
        {content ? (
          <Markdown text={content} />
        ) : reasoning && !streaming ? null : (
          <span className="inline-flex gap-1 py-2" aria-label={t('loading')}>
            <span className="h-2 w-2 animate-bounce rounded-full bg-slate-400 [animation-delay:-0.3s]" />
            <span className="h-2 w-2 animate-bounce rounded-full bg-slate-400 [animation-delay:-0.15s]" />
            <span className="h-2 w-2 animate-bounce rounded-full bg-slate-400" />
          </span>
        )}
        {streaming && content && <span className="ml-0.5 inline-block h-4 w-2 animate-pulse bg-slate-400 align-middle" />}
      </div>
      {!streaming && (
        <div className="flex items-center gap-1 text-slate-500 opacity-100 transition-opacity sm:opacity-60 sm:group-hover:opacity-100">
          {variant && variant.count > 1 && (
            <div data-testid="variant-switcher" className="flex items-center text-xs tabular-nums">
              <button
                type="button"
                data-testid="variant-prev"
                aria-label={t('previousAnswer')}
                title={t('previousAnswer')}
                disabled={!variant.onChoose || variant.index === 0}
                onClick={() => variant.onChoose?.(variant.index - 1)}
                className="rounded-md p-1 hover:bg-slate-200/70 disabled:opacity-40 dark:hover:bg-slate-700/70"
              >
                <ChevronLeft className="h-3.5 w-3.5" aria-hidden />
              </button>
              <span data-testid="variant-position">
                {variant.index + 1}/{variant.count}
              </span>
              <button
                type="button"
                data-testid="variant-next"
                aria-label={t('nextAnswer')}
                title={t('nextAnswer')}
                disabled={!variant.onChoose || variant.index === variant.count - 1}
                onClick={() => variant.onChoose?.(variant.index + 1)}
                className="rounded-md p-1 hover:bg-slate-200/70 disabled:opacity-40 dark:hover:bg-slate-700/70"
              >
                <ChevronRight className="h-3.5 w-3.5" aria-hidden />
              </button>
            </div>
          )}
          <CopyButton testId="copy-message" text={() => content} label={t('copy')} doneLabel={t('copied')} />
          {onRegenerate && (
            <button
              type="button"
              data-testid="regenerate"
              title={t('regenerate')}
              aria-label={t('regenerate')}
              onClick={onRegenerate}
              className="rounded-md p-1.5 hover:bg-slate-200/70 dark:hover:bg-slate-700/70"
            >
              <RefreshCw className="h-3.5 w-3.5" aria-hidden />
            </button>
          )}
          {status === 'partial' && (
            <span data-testid="stopped-badge" className="rounded bg-amber-100 px-1.5 py-0.5 text-xs text-amber-800 dark:bg-amber-900/40 dark:text-amber-200">
              {t('stopped')}
            </span>
          )}
          {status === 'error' && (
            <span className="rounded bg-red-100 px-1.5 py-0.5 text-xs text-red-800 dark:bg-red-900/40 dark:text-red-200">
              {t('answerFailed')}
            </span>
          )}
        </div>
      )}
    </div>
  );
});
