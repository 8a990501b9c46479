import { RefreshCw } from 'lucide-react';
import { useState } from 'react';
import { modelsApi } from '../../api/endpoints';
import { ConfirmDialog } from '../../components/ui/ConfirmDialog';
import { Meter } from '../../components/admin/Charts';
import { useModelManagement } from '../../hooks/useModelManagement';
import { useT } from '../../i18n';
import { refreshModelStatus } from '../../stores/models';
import { anyErrorText, reasonText } from '../../i18n/serverErrors';

const STATUS_COLORS: Record<string, string> = {
  running: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900/40 dark:text-emerald-200',
  switching: 'bg-amber-100 text-amber-800 dark:bg-amber-900/40 dark:text-amber-200',
  loading: 'bg-amber-100 text-amber-800 dark:bg-amber-900/40 dark:text-amber-200',
  starting: 'bg-amber-100 text-amber-800 dark:bg-amber-900/40 dark:text-amber-200',
  error: 'bg-red-100 text-red-800 dark:bg-red-900/40 dark:text-red-200',
  stopped: 'bg-slate-200 text-slate-700 dark:bg-slate-800 dark:text-slate-300',
};

function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : '—';
}

/** Live model status, hardware, profiles and switch history (admins). */
export default function ModelsPage() {
  const t = useT();
  const mm = useModelManagement({ autoLoad: true, pollMs: 3000 });
  const [reloading, setReloading] = useState(false);
  // what the last "Reload profiles" did: a count, or the error (it must not pass silently)
  const [reloadNote, setReloadNote] = useState<{ ok: boolean; text: string } | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const nameOf = (id: string) => d?.available_profiles[id]?.name || id;
  const d = mm.details;
  const hw = d?.hardware_info;

  const card = 'rounded-xl border border-slate-200 p-4 dark:border-slate-800';
  return (
    <div className="h-full overflow-y-auto">
      <div className="mx-auto flex max-w-5xl flex-col gap-4 p-4">
        <div className="flex items-center justify-between">
          <h1 className="text-xl font-semibold">{t('modelsPage')}</h1>
          <button
            type="button"
            data-testid="reload-profiles"
            disabled={reloading}
            onClick={async () => {
              setReloading(true);
              setReloadNote(null);
              try {
                await modelsApi.reload();
                const fresh = await refreshModelStatus();
                const n = Object.keys(fresh?.available_profiles ?? {}).length;
                setReloadNote({ ok: true, text: t('reloadedProfiles', { n }) });
              } catch (err) {
                setReloadNote({ ok: false, text: t('reloadFailed', { m: anyErrorText(t, err) }) });
              } finally {
                setReloading(false);
              }
            }}
            className="flex items-center gap-1.5 rounded-lg border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-50 disabled:opacity-50 dark:border-slate-700 dark:hover:bg-slate-900"
          >
            <RefreshCw className={`h-4 w-4 ${reloading ? 'animate-spin' : ''}`} aria-hidden />
            {t('reloadProfiles')}
          </button>
        </div>
        {reloadNote && (
          <p role="status" data-testid="reload-note" className={`text-sm ${reloadNote.ok ? 'text-emerald-700 dark:text-emerald-400' : 'text-red-600'}`}>
            {reloadNote.text}
          </p>
        )}
        {!mm.available && mm.error && <p className="text-sm text-slate-500">{anyErrorText(t, mm.error)}</p>}
        {d && (
          <section className={`${card} grid grid-cols-2 gap-3 text-sm sm:grid-cols-4`}>
            <div>
              <div className="text-xs text-slate-500">{t('status')}</div>
              <span data-testid="model-status" className={`mt-1 inline-block rounded-full px-2 py-0.5 text-xs font-medium ${STATUS_COLORS[d.status] ?? ''}`}>
                {t(`status_${d.status}` as 'status_running')}
              </span>
            </div>
            <div>
              <div className="text-xs text-slate-500">{t('currentModel')}</div>
              <div data-testid="status-current-model" className="mt-1 font-medium">
                {mm.currentModelName ?? '—'}
              </div>
              {mm.isSwitching && mm.switchingTo && (
                <div data-testid="status-switch-target" className="text-xs text-amber-700 dark:text-amber-400">
                  {t('switchingTo', { m: nameOf(mm.switchingTo) })}
                </div>
              )}
            </div>
            <div>
              <div className="text-xs text-slate-500">{t('servedModel')}</div>
              <div className="mt-1 truncate font-mono text-xs">{d.served_model ?? '—'}</div>
            </div>
            <div>
              <div className="text-xs text-slate-500">
                {t('runtime')} / {t('version')}
              </div>
              <div className="mt-1 font-mono text-xs">
                {d.runtime ?? '—'} / {d.upstream_version ?? '—'}
              </div>
            </div>
            {d.switch && (
              <div className="col-span-2 sm:col-span-4">
                <div className="text-xs text-slate-500">{t('phase')}</div>
                <ol data-testid="switch-phases" className="mt-1 flex flex-wrap gap-1 text-xs">
                  {(d.switch.phases ?? [{ phase: d.switch.phase, at: d.switch.started_at }]).map((p, i) => (
                    <li key={i} className="rounded bg-slate-100 px-2 py-0.5 dark:bg-slate-800">
                      {t(`phase_${p.phase}` as 'phase_running')}
                    </li>
                  ))}
                </ol>
                {d.switch.error && <p className="mt-1 text-xs text-red-600">{d.switch.error}</p>}
              </div>
            )}
            {(d.error || d.hint) && (
              <div className="col-span-2 text-xs sm:col-span-4">
                {d.error && <p className="text-red-600">{t('lastError')}: {d.error}</p>}
                {d.hint && <p className="text-slate-600 dark:text-slate-400">{t('hint')}: {d.hint}</p>}
                {d.log_tail && d.log_tail.length > 0 && (
                  <pre className="mt-1 max-h-40 overflow-auto rounded bg-slate-900 p-2 text-[11px] text-slate-100">{d.log_tail.join('\n')}</pre>
                )}
              </div>
            )}
          </section>
        )}
        <section className={card} data-testid="hardware">
          <h2 className="mb-3 font-medium">{t('hardware')}</h2>
          {hw?.error && <p className="text-sm text-red-600">{hw.error}</p>}
          {!hw || hw.gpu_count === 0 ? (
            <p className="text-sm text-slate-500">{t('noGpu')}</p>
          ) : (
            <div className="grid gap-4 sm:grid-cols-2">
              {hw.gpus.map((g) => (
                <div key={g.index} data-testid="gpu-card" className="flex flex-col gap-2 rounded-lg bg-slate-50 p-3 dark:bg-slate-900">
                  <div className="text-sm font-medium">
                    GPU {g.index} · {g.name}
                  </div>
                  <Meter label={t('gpuMemory')} value={g.memory_used_gb} max={g.memory_total_gb} unit="GB" testId="gpu-memory" />
                  <Meter label={t('gpuUtil')} value={g.utilization_percent ?? 0} max={100} unit="%" testId="gpu-util" />
                </div>
              ))}
            </div>
          )}
        </section>
        <section className={card}>
          <h2 className="mb-3 font-medium">{t('profiles')}</h2>
          {d?.switching_enabled === false && (
            <p data-testid="switching-off" className="mb-3 text-sm text-slate-500">
              {t('switchingOff')}
            </p>
          )}
          <div className="overflow-x-auto">
            <table className="w-full text-left text-sm">
              <tbody>
                {mm.profiles.map((p) => (
                  <tr key={p.id} data-testid={`profile-row-${p.id}`} className="border-t border-slate-100 align-top dark:border-slate-800">
                    <td className="py-2 pr-3">
                      <div className="font-medium">{p.name}</div>
                      <div className="font-mono text-xs text-slate-500">{p.id}</div>
                    </td>
                    <td className="py-2 pr-3 text-xs text-slate-600 dark:text-slate-400">
                      {p.compatible ? (
                        <span className="text-emerald-700 dark:text-emerald-400">{t('compatible')}</span>
                      ) : (
                        <>
                          <span className="text-red-700 dark:text-red-400">{t('incompatible')}</span>
                          <ul className="list-disc pl-4">
                            {p.reasons.map((r, i) => (
                              <li key={r}>{reasonText(t, r, p.details[i])}</li>
                            ))}
                          </ul>
                        </>
                      )}
                    </td>
                    <td className="py-2 text-right">
                      {p.id === mm.currentModel ? (
                        <span className="text-xs font-medium text-indigo-600">{t('current')}</span>
                      ) : (
                        <button
                          type="button"
                          disabled={!p.compatible || mm.isSwitching || d?.switching_enabled === false}
                          title={d?.switching_enabled === false ? t('switchingOff') : undefined}
                          data-testid={`switch-to-${p.id}`}
                          onClick={() => setConfirming(p.id)}
                          className="whitespace-nowrap rounded-lg border border-slate-300 px-2.5 py-1 text-xs hover:bg-slate-50 disabled:cursor-not-allowed disabled:opacity-40 dark:border-slate-700 dark:hover:bg-slate-900"
                        >
                          {t('switchTo')}
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
        <section className={card}>
          <h2 className="mb-3 font-medium">{t('switchHistory')}</h2>
          {!d?.history?.length ? (
            <p className="text-sm text-slate-500">{t('noHistory')}</p>
          ) : (
            <div className="overflow-x-auto">
              <table data-testid="switch-history" className="w-full text-left text-sm">
                <thead className="text-xs text-slate-500">
                  <tr>
                    <th className="py-1 pr-3">{t('from')}</th>
                    <th className="py-1 pr-3">{t('to')}</th>
                    <th className="py-1 pr-3">{t('started')}</th>
                    <th className="py-1 pr-3">{t('duration')}</th>
                    <th className="py-1">{t('outcome')}</th>
                  </tr>
                </thead>
                <tbody>
                  {d.history.map((h, i) => (
                    <tr key={i} className="border-t border-slate-100 dark:border-slate-800">
                      <td className="py-1.5 pr-3 font-mono text-xs">{h.from_profile ?? '—'}</td>
                      <td className="py-1.5 pr-3 font-mono text-xs">{h.to_profile}</td>
                      <td className="py-1.5 pr-3 text-xs">{when(h.started_at)}</td>
                      <td className="py-1.5 pr-3 text-xs">{h.duration_s != null ? `${h.duration_s.toFixed(1)} s` : '—'}</td>
                      <td className={`py-1.5 text-xs ${h.outcome === 'success' ? 'text-emerald-700' : 'text-red-700'}`} title={h.error ?? undefined}>
                        {h.outcome}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </section>
      </div>
      {confirming && (
        <ConfirmDialog
          message={t('confirmSwitch', { m: nameOf(confirming) })}
          confirmLabel={t('switchTo')}
          danger={false}
          onCancel={() => setConfirming(null)}
          onConfirm={() => {
            const id = confirming;
            setConfirming(null);
            void mm.switchModel(id);
          }}
        />
      )}
    </div>
  );
}
