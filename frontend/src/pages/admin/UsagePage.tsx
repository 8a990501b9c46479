import { Download } from 'lucide-react';
import { useEffect, useState } from 'react';
import { downloadResponse, usageApi } from '../../api/endpoints';
import type { UsageReport } from '../../api/types';
import { BarChart, LineChart } from '../../components/admin/Charts';
import { useT } from '../../i18n';
import { anyErrorText } from '../../i18n/serverErrors';

type Days = 7 | 30 | 90;

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** Every day of the window, so a quiet day is a zero and not a gap. */
function fillDays(report: UsageReport | null, days: number): { labels: string[]; get: (key: string) => UsageReport['groups'][number] | undefined } {
  const labels: string[] = [];
  const today = new Date();
  for (let i = days - 1; i >= 0; i--) labels.push(isoDay(new Date(today.getTime() - i * 86_400_000)));
  const byKey = new Map((report?.groups ?? []).map((g) => [g.key ?? '', g]));
  return { labels, get: (key) => byKey.get(key) };
}

/** Requests, tokens and latency over time and by model (own usage; admins: everyone's). */
export default function UsagePage({ admin }: { admin: boolean }) {
  const t = useT();
  const [days, setDays] = useState<Days>(7);
  const [byDay, setByDay] = useState<UsageReport | null>(null);
  const [byModel, setByModel] = useState<UsageReport | null>(null);
  const [byUser, setByUser] = useState<UsageReport | null>(null);
  const [error, setError] = useState<unknown>(null);
  const from = isoDay(new Date(Date.now() - (days - 1) * 86_400_000));

  useEffect(() => {
    let live = true;
    setError(null);
    Promise.all([
      usageApi.report({ from, group_by: 'day' }, admin),
      usageApi.report({ from, group_by: 'model' }, admin),
      admin ? usageApi.report({ from, group_by: 'user' }, admin) : Promise.resolve(null),
    ])
      .then(([d, m, u]) => {
        if (!live) return;
        setByDay(d);
        setByModel(m);
        setByUser(u);
      })
      .catch((err: unknown) => live && setError(err));
    return () => {
      live = false;
    };
  }, [from, admin]);

  const { labels, get } = fillDays(byDay, days);
  const totals = byDay?.totals;
  const stat = (label: string, value: string, testId: string, note?: string) => (
    <div data-testid={testId} className="h-full rounded-xl border border-slate-200 p-3 dark:border-slate-800">
      <div className="text-xs text-slate-500">{label}</div>
      <div data-testid={`${testId}-value`} className="mt-1 text-lg font-semibold tabular-nums">
        {value}
      </div>
      {note && <div className="text-xs text-slate-500">{note}</div>}
    </div>
  );
  const ms = (v: number | null | undefined) => (v == null ? '—' : `${Math.round(v).toLocaleString()} ms`);
  const pcts = (p50: number | null | undefined, p95: number | null | undefined, p99: number | null | undefined) =>
    p50 == null ? '—' : [p50, p95, p99].map((v) => (v == null ? '—' : Math.round(v).toLocaleString())).join(' / ') + ' ms';
  // a refused request (rate limit, no model up) never reached a model: it has none
  const models = (byModel?.groups ?? []).map((g) => ({ ...g, label: g.key ?? t('noModelRefused') }));
  const errorCodes = Object.entries(totals?.errors_by_code ?? {})
    .map(([code, n]) => ({ label: code, value: n }))
    .sort((a, b) => b.value - a.value || a.label.localeCompare(b.label));

  return (
    <div className="h-full overflow-y-auto">
      <div className="mx-auto flex max-w-5xl flex-col gap-4 p-4">
        <div className="flex flex-wrap items-center justify-between gap-2">
          <h1 className="text-xl font-semibold">{t('usagePage')}</h1>
          <div className="flex items-center gap-2">
            <select data-testid="usage-period" aria-label={t('period')} value={days} onChange={(e) => setDays(Number(e.target.value) as Days)} className="rounded-lg border border-slate-300 bg-white px-2 py-1.5 text-sm dark:border-slate-700 dark:bg-slate-900">
              <option value={7}>{t('last7')}</option>
              <option value={30}>{t('last30')}</option>
              <option value={90}>{t('last90')}</option>
            </select>
            <button
              type="button"
              data-testid="download-csv"
              onClick={async () => {
                const res = await usageApi.exportCsv({ from, all: admin });
                await downloadResponse(res, `usage-${from}.csv`);
              }}
              className="flex items-center gap-1.5 rounded-lg bg-indigo-600 px-3 py-1.5 text-sm text-white hover:bg-indigo-500"
            >
              <Download className="h-4 w-4" aria-hidden />
              {t('downloadCsv')}
            </button>
          </div>
        </div>
        {error !== null && <p role="alert" className="text-sm text-red-600">{anyErrorText(t, error)}</p>}
        <div data-testid="usage-totals" className="grid grid-cols-2 gap-3 sm:grid-cols-4">
          {stat(t('requests'), String(totals?.requests ?? 0), 'usage-requests')}
          {stat(t('tokens'), String((totals?.prompt_tokens ?? 0) + (totals?.completion_tokens ?? 0)), 'usage-tokens')}
          {stat(t('errors'), String(totals?.errors ?? 0), 'usage-errors')}
          {stat(t('cancelled'), String(totals?.cancelled ?? 0), 'usage-cancelled', t('cancelledHint'))}
          <div className="col-span-2">
            {stat(t('ttftPercentiles'), pcts(totals?.p50_ttft_ms, totals?.p95_ttft_ms, totals?.p99_ttft_ms), 'usage-ttft', `${t('avgTtft')}: ${ms(totals?.avg_ttft_ms)}`)}
          </div>
          <div className="col-span-2">
            {stat(t('latencyPercentiles'), pcts(totals?.p50_latency_ms, totals?.p95_latency_ms, totals?.p99_latency_ms), 'usage-latency', `${t('avgLatency')}: ${ms(totals?.avg_latency_ms)}`)}
          </div>
        </div>
        <div className="grid gap-4 lg:grid-cols-2">
          <LineChart title={`${t('requests')} · ${t('byDay')}`} labels={labels} series={[
            { label: t('requests'), color: '#6366f1', values: labels.map((l) => get(l)?.requests ?? 0) },
            { label: t('errors'), color: '#ef4444', values: labels.map((l) => get(l)?.errors ?? 0) },
            { label: t('cancelled'), color: '#94a3b8', values: labels.map((l) => get(l)?.cancelled ?? 0) },
          ]} />
          <LineChart title={`${t('tokens')} · ${t('byDay')}`} labels={labels} series={[
            { label: t('promptTokens'), color: '#0ea5e9', values: labels.map((l) => get(l)?.prompt_tokens ?? 0) },
            { label: t('completionTokens'), color: '#10b981', values: labels.map((l) => get(l)?.completion_tokens ?? 0) },
          ]} />
          <LineChart title={`${t('latencyMs')} · ${t('byDay')}`} labels={labels} series={[
            { label: 'TTFT p50', color: '#f59e0b', values: labels.map((l) => get(l)?.p50_ttft_ms ?? 0) },
            { label: 'p50', color: '#8b5cf6', values: labels.map((l) => get(l)?.p50_latency_ms ?? 0) },
            { label: 'p95', color: '#ec4899', values: labels.map((l) => get(l)?.p95_latency_ms ?? 0) },
          ]} />
          <BarChart title={`${t('requests')} · ${t('byModel')}`} color="#6366f1" rows={models.map((g) => ({ label: g.label, value: g.requests }))} />
          <BarChart title={`${t('tokens')} · ${t('byModel')}`} color="#10b981" rows={models.map((g) => ({ label: g.label, value: g.prompt_tokens + g.completion_tokens }))} />
          <BarChart title={`p95 ${t('latencyMs')} · ${t('byModel')}`} color="#8b5cf6" rows={models.filter((g) => g.p95_latency_ms != null).map((g) => ({ label: g.label, value: g.p95_latency_ms ?? 0 }))} />
          <BarChart testId="usage-errors-by-code" title={t('errorsByCode')} color="#ef4444" rows={errorCodes} />
          {byUser && <BarChart title={`${t('requests')} · ${t('byUser')}`} color="#0ea5e9" rows={byUser.groups.map((g) => ({ label: g.key ?? t('deletedUser'), value: g.requests }))} />}
        </div>
        {models.length === 0 && <p className="text-sm text-slate-500">{t('noData')}</p>}
      </div>
    </div>
  );
}
