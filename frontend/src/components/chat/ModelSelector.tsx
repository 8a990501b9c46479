import { Check, ChevronDown, CircleAlert, Cpu, Loader2 } from 'lucide-react';
import { useEffect, useRef, useState } from 'react';
import { useT } from '../../i18n';
import { reasonText } from '../../i18n/serverErrors';
import { ConfirmDialog } from '../ui/ConfirmDialog';

export interface ModelOptionInfo {
  name: string;
  description?: string | null;
  /** false: shown disabled, with `reasons` on hover */
  compatible?: boolean;
  reasons?: string[];
  /** the reasons as data, index for index (worded in the UI language) */
  details?: unknown[];
}

export interface ModelSelectorProps {
  models: Record<string, ModelOptionInfo>;
  currentModel: string | null;
  onModelChange: (profileId: string) => void;
  /** a switch is running: the selector is locked and says so */
  isLoading: boolean;
  /** the phase of the running switch, shown next to the progress text */
  phase?: string | null;
  /** the last switch's result, shown after it ends */
  result?: 'success' | 'failed' | 'rolled_back' | null;
  resultError?: string | null;
  /** users who may not switch see the list but cannot pick */
  canSwitch?: boolean;
  /** why switching is locked, when it is not only for admins (the cluster runs the model servers) */
  lockedNote?: string | null;
  /** the profile a running switch goes to: named while it runs */
  switchTarget?: string | null;
}

/** Current model, its profiles (incompatible ones disabled with their reasons), switching state. */
export function ModelSelector({
  models,
  currentModel,
  onModelChange,
  isLoading,
  phase,
  result,
  resultError,
  canSwitch = true,
  lockedNote = null,
  switchTarget = null,
}: ModelSelectorProps) {
  const t = useT();
  const [open, setOpen] = useState(false);
  // switching changes the model of every user: it is asked for, not done on one click
  const [confirming, setConfirming] = useState<string | null>(null);
  const [hovered, setHovered] = useState<string | null>(null);
  const root = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent | KeyboardEvent) => {
      if (e instanceof KeyboardEvent ? e.key === 'Escape' : !root.current?.contains(e.target as Node)) {
        setOpen(false);
      }
    };
    document.addEventListener('mousedown', close);
    document.addEventListener('keydown', close);
    return () => {
      document.removeEventListener('mousedown', close);
      document.removeEventListener('keydown', close);
    };
  }, [open]);

  const currentName = (currentModel && models[currentModel]?.name) || currentModel || t('noModel');
  const nameOf = (id: string) => models[id]?.name || id;
  const pick = (id: string, info: ModelOptionInfo) => {
    if (info.compatible === false || !canSwitch || id === currentModel) return;
    setOpen(false);
    setConfirming(id);
  };

  return (
    <div ref={root} className="relative flex min-w-0 items-center gap-2">
      <button
        type="button"
        data-testid="model-selector"
        disabled={isLoading}
        aria-haspopup="listbox"
        aria-expanded={open}
        title={t('selectModel')}
        onClick={() => setOpen((o) => !o)}
        className="flex min-w-0 items-center gap-2 rounded-lg border border-slate-200 bg-white px-3 py-1.5 text-sm shadow-sm hover:bg-slate-50 disabled:cursor-wait disabled:opacity-80 dark:border-slate-700 dark:bg-slate-900 dark:hover:bg-slate-800"
      >
        {isLoading ? (
          <Loader2 className="h-4 w-4 shrink-0 animate-spin text-amber-500" aria-hidden />
        ) : (
          <Cpu className="h-4 w-4 shrink-0 text-indigo-500" aria-hidden />
        )}
        <span data-testid="current-model" className={`truncate font-medium ${isLoading && switchTarget ? 'hidden sm:inline' : ''}`}>
          {currentName}
        </span>
        {isLoading && (
          <span data-testid="switching-label" className="min-w-0 truncate text-amber-600 dark:text-amber-400">
            {switchTarget ? t('switchingTo', { m: nameOf(switchTarget) }) : t('switching')}
          </span>
        )}
        <ChevronDown className="h-4 w-4 shrink-0 opacity-60" aria-hidden />
      </button>
      {isLoading && phase && (
        <span data-testid="switch-phase" className="hidden text-xs text-slate-500 sm:inline">
          {t(`phase_${phase}` as 'phase_loading')}
        </span>
      )}
      {!isLoading && result && (
        <span
          role="status"
          data-testid="switch-result"
          title={resultError ?? undefined}
          className={`shrink-0 rounded-full px-2 py-0.5 text-xs font-medium ${
            result === 'success'
              ? 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900/50 dark:text-emerald-200'
              : 'bg-red-100 text-red-800 dark:bg-red-900/50 dark:text-red-200'
          }`}
        >
          {result === 'success' ? t('switchComplete') : result === 'rolled_back' ? t('switchRolledBack') : t('switchFailed')}
        </span>
      )}
      {open && (
        <ul
          role="listbox"
          aria-label={t('selectModel')}
          data-testid="model-listbox"
          className="fixed inset-x-2 top-14 z-30 mt-1 max-h-[70vh] overflow-y-auto sm:absolute sm:inset-x-auto sm:left-0 sm:top-full sm:w-[24rem] rounded-xl border border-slate-200 bg-white p-1 shadow-xl dark:border-slate-700 dark:bg-slate-900"
        >
          {!canSwitch && (
            <li data-testid="switch-locked-note" className="px-3 py-2 text-xs text-slate-500">
              {lockedNote ?? t('adminOnlySwitch')}
            </li>
          )}
          {Object.entries(models).map(([id, info]) => {
            const incompatible = info.compatible === false;
            const current = id === currentModel;
            const locked = incompatible || !canSwitch;
            return (
              <li key={id} data-testid="model-option" className="relative">
                <button
                  type="button"
                  role="option"
                  aria-selected={current}
                  aria-disabled={locked || undefined}
                  data-testid={`model-option-${id}`}
                  onClick={() => pick(id, info)}
                  onMouseEnter={() => setHovered(id)}
                  onMouseLeave={() => setHovered((h) => (h === id ? null : h))}
                  onFocus={() => setHovered(id)}
                  onBlur={() => setHovered((h) => (h === id ? null : h))}
                  className={`flex w-full items-start gap-2 rounded-lg px-3 py-2 text-left text-sm ${
                    incompatible
                      ? 'disabled cursor-not-allowed opacity-50'
                      : locked
                        ? 'cursor-default'
                        : 'hover:bg-slate-100 dark:hover:bg-slate-800'
                  } ${current ? 'bg-indigo-50 dark:bg-indigo-950/60' : ''}`}
                >
                  <span className="mt-0.5 h-4 w-4 shrink-0">
                    {current ? (
                      <Check className="h-4 w-4 text-indigo-600" aria-hidden />
                    ) : incompatible ? (
                      <CircleAlert className="h-4 w-4 text-slate-400" aria-hidden />
                    ) : null}
                  </span>
                  <span className="min-w-0">
                    <span className="block font-medium">{info.name}</span>
                    {info.description && (
                      <span className="block truncate text-xs text-slate-500 dark:text-slate-400">
                        {info.description}
                      </span>
                    )}
                  </span>
                </button>
                {incompatible && hovered === id && (
                  <div
                    role="tooltip"
                    data-testid={`model-reason-${id}`}
                    className="pointer-events-none mx-3 mb-2 rounded-md bg-slate-900 px-3 py-2 text-xs text-white shadow-lg dark:bg-slate-700"
                  >
                    <p className="font-semibold">{t('incompatible')}</p>
                    {info.reasons && info.reasons.length > 0 && (
                      <ul className="mt-1 list-disc pl-4">
                        {info.reasons.map((r, i) => (
                          <li key={r}>{reasonText(t, r, info.details?.[i])}</li>
                        ))}
                      </ul>
                    )}
                  </div>
                )}
              </li>
            );
          })}
        </ul>
      )}
      {confirming && (
        <ConfirmDialog
          message={t('confirmSwitch', { m: nameOf(confirming) })}
          confirmLabel={t('switchTo')}
          danger={false}
          onCancel={() => setConfirming(null)}
          onConfirm={() => {
            const id = confirming;
            setConfirming(null);
            onModelChange(id);
          }}
        />
      )}
    </div>
  );
}
