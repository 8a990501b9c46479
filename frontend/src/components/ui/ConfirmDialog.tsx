import { useEffect, useRef } from 'react';
import { useT } from '../../i18n';

/** A small modal asking to confirm a destructive action (instead of `window.confirm`). */
export function ConfirmDialog({
  message,
  onConfirm,
  onCancel,
  confirmLabel,
  danger = true,
}: {
  message: string;
  onConfirm: () => void;
  onCancel: () => void;
  /** default: Delete */
  confirmLabel?: string;
  /** red confirm button (default) or the app's accent */
  danger?: boolean;
}) {
  const t = useT();
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    cancel.current?.focus();
    const onKey = (e: KeyboardEvent) => e.key === 'Escape' && onCancel();
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [onCancel]);
  return (
    <div className="fixed inset-0 z-50 flex items-center justify-center bg-black/40 p-4" onMouseDown={onCancel}>
      <div
        role="alertdialog"
        aria-modal="true"
        data-testid="confirm-dialog"
        onMouseDown={(e) => e.stopPropagation()}
        className="w-full max-w-sm rounded-xl bg-white p-5 shadow-2xl dark:bg-slate-900"
      >
        <p className="text-sm">{message}</p>
        <div className="mt-5 flex justify-end gap-2">
          <button ref={cancel} type="button" onClick={onCancel} className="rounded-lg border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-50 dark:border-slate-700 dark:hover:bg-slate-800">
            {t('cancel')}
          </button>
          <button
            type="button"
            data-testid="confirm-button"
            onClick={onConfirm}
            className={`rounded-lg px-3 py-1.5 text-sm font-medium text-white ${danger ? 'bg-red-600 hover:bg-red-500' : 'bg-indigo-600 hover:bg-indigo-500'}`}
          >
            {confirmLabel ?? t('delete')}
          </button>
        </div>
      </div>
    </div>
  );
}
