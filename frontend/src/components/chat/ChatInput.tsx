import { ArrowUp, Square } from 'lucide-react';
import { useEffect, useRef, type KeyboardEvent } from 'react';
import { useContextCheck } from '../../hooks/useContextLimit';
import { useT } from '../../i18n';
import { useDraft } from '../../stores/draft';

interface Props {
  streaming: boolean;
  onSend: (text: string) => void;
  onStop: () => void;
}

/** Enter sends, Shift+Enter adds a line, Esc stops; the text survives a session expiry. */
export function ChatInput({ streaming, onSend, onStop }: Props) {
  const t = useT();
  const draft = useDraft((s) => s.draft);
  const setDraft = useDraft((s) => s.setDraft);
  const area = useRef<HTMLTextAreaElement>(null);
  // a prompt the model cannot take is refused here, with the numbers, not sent to fail upstream
  const context = useContextCheck(draft);

  useEffect(() => {
    const el = area.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }, [draft]);

  useEffect(() => {
    if (!streaming) area.current?.focus();
  }, [streaming]);

  const submit = () => {
    if (streaming || !draft.trim() || context.tooLong) return;
    onSend(draft);
    setDraft('');
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    // a Korean IME's Enter ends the composition; it must not send a half-typed syllable
    if (e.nativeEvent.isComposing || e.keyCode === 229) return;
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      submit();
    } else if (e.key === 'Escape' && streaming) {
      e.preventDefault();
      onStop();
    }
  };

  return (
    <>
      {context.tooLong && (
        <p role="alert" data-testid="context-warning" className="mb-2 rounded-lg bg-amber-50 px-3 py-2 text-sm text-amber-900 dark:bg-amber-900/30 dark:text-amber-100">
          {t('promptTooLong', { n: context.tokens.toLocaleString(), max: (context.maxLen ?? 0).toLocaleString() })}
        </p>
      )}
      <form
        className="flex items-end gap-2 rounded-2xl border border-slate-300 bg-white p-2 shadow-sm focus-within:border-indigo-400 focus-within:ring-2 focus-within:ring-indigo-100 dark:border-slate-700 dark:bg-slate-900 dark:focus-within:ring-indigo-900/40"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <textarea
          ref={area}
          data-testid="chat-input"
          rows={1}
          value={draft}
          placeholder={t('messagePlaceholder')}
          aria-label={t('messagePlaceholder')}
          onChange={(e) => setDraft(e.target.value)}
          onKeyDown={onKeyDown}
          className="max-h-60 min-h-[2.5rem] flex-1 resize-none bg-transparent px-2 py-2 text-[15px] outline-none placeholder:text-slate-400"
        />
        {streaming ? (
          <button
            type="button"
            data-testid="stop-button"
            onClick={onStop}
            title={`${t('stop')} (Esc)`}
            aria-label={t('stop')}
            className="flex h-10 w-10 shrink-0 items-center justify-center rounded-xl bg-slate-800 text-white hover:bg-slate-700 dark:bg-slate-200 dark:text-slate-900"
          >
            <Square className="h-4 w-4 fill-current" aria-hidden />
          </button>
        ) : (
          <button
            type="submit"
            data-testid="send-button"
            disabled={!draft.trim() || context.tooLong}
            title={`${t('send')} (Enter)`}
            aria-label={t('send')}
            className="flex h-10 w-10 shrink-0 items-center justify-center rounded-xl bg-indigo-600 text-white hover:bg-indigo-500 disabled:cursor-not-allowed disabled:bg-slate-300 dark:disabled:bg-slate-700"
          >
            <ArrowUp className="h-5 w-5" aria-hidden />
          </button>
        )}
      </form>
    </>
  );
}
