/** Small hand-made SVG charts: enough for the usage dashboard, no chart library. */

export interface Series {
  label: string;
  color: string;
  values: number[];
}

const W = 640;
const H = 200;
const PAD = { l: 48, r: 12, t: 12, b: 28 };

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  const steps = [1, 2, 2.5, 5, 10];
  return (steps.find((s) => s * exp >= value) ?? 10) * exp;
}

function fmt(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n * 10) / 10);
}

/** Lines over categories (days); one line per series, a shared y axis. */
export function LineChart({ labels, series, title }: { labels: string[]; series: Series[]; title: string }) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const innerW = W - PAD.l - PAD.r;
  const innerH = H - PAD.t - PAD.b;
  const x = (i: number) => PAD.l + (labels.length <= 1 ? innerW / 2 : (i * innerW) / (labels.length - 1));
  const y = (v: number) => PAD.t + innerH - (v / max) * innerH;
  const tickEvery = Math.max(1, Math.ceil(labels.length / 6));
  return (
    <figure className="rounded-xl border border-slate-200 p-3 dark:border-slate-800">
      <figcaption className="mb-1 flex flex-wrap items-center gap-3 text-sm font-medium">
        {title}
        {series.map((s) => (
          <span key={s.label} className="flex items-center gap-1 text-xs font-normal text-slate-500">
            <span className="h-2 w-3 rounded-sm" style={{ background: s.color }} />
            {s.label}
          </span>
        ))}
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} className="h-auto w-full" role="img" aria-label={title}>
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(max * f)} y2={y(max * f)} className="stroke-slate-200 dark:stroke-slate-800" />
            <text x={PAD.l - 6} y={y(max * f) + 4} textAnchor="end" className="fill-slate-500 text-[11px]">
              {fmt(max * f)}
            </text>
          </g>
        ))}
        {labels.map((label, i) =>
          i % tickEvery === 0 ? (
            <text key={label} x={x(i)} y={H - 8} textAnchor={i === labels.length - 1 && labels.length > 1 ? 'end' : 'middle'} className="fill-slate-500 text-[11px]">
              {label.slice(5)}
            </text>
          ) : null,
        )}
        {series.map((s) => (
          <g key={s.label}>
            <polyline fill="none" stroke={s.color} strokeWidth={2} points={s.values.map((v, i) => `${x(i)},${y(v)}`).join(' ')} />
            {s.values.map((v, i) => (
              <circle key={i} cx={x(i)} cy={y(v)} r={3} fill={s.color}>
                <title>{`${labels[i]}: ${fmt(v)}`}</title>
              </circle>
            ))}
          </g>
        ))}
      </svg>
    </figure>
  );
}

/** Horizontal bars, one per category (model, user). */
export function BarChart({ rows, title, color, testId }: { rows: { label: string; value: number }[]; title: string; color: string; testId?: string }) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return (
    <figure data-testid={testId} className="rounded-xl border border-slate-200 p-3 dark:border-slate-800">
      <figcaption className="mb-2 text-sm font-medium">{title}</figcaption>
      <div className="flex flex-col gap-1.5">
        {rows.map((r) => (
          <div key={r.label} data-testid="bar-row" className="grid grid-cols-[minmax(0,9rem)_1fr_auto] items-center gap-2 text-xs">
            <span className="truncate" title={r.label}>{r.label}</span>
            <div className="h-3 rounded bg-slate-100 dark:bg-slate-800">
              <div className="h-3 rounded" style={{ width: `${(r.value / max) * 100}%`, background: color }} />
            </div>
            <span className="font-mono tabular-nums">{fmt(r.value)}</span>
          </div>
        ))}
      </div>
    </figure>
  );
}

/** A labelled bar with a percentage (GPU memory, utilization). */
export function Meter({ label, value, max, unit, testId }: { label: string; value: number; max: number; unit: string; testId?: string }) {
  const pct = max > 0 ? Math.min(100, (value / max) * 100) : 0;
  const color = pct > 90 ? 'bg-red-500' : pct > 70 ? 'bg-amber-500' : 'bg-emerald-500';
  return (
    <div data-testid={testId} className="flex flex-col gap-1 text-xs">
      <div className="flex justify-between">
        <span>{label}</span>
        <span className="font-mono tabular-nums">
          {unit === '%' ? `${Math.round(value)}%` : `${value.toFixed(1)} / ${max.toFixed(1)} ${unit}`}
        </span>
      </div>
      <div className="h-2 rounded-full bg-slate-200 dark:bg-slate-800" role="meter" aria-valuenow={Math.round(pct)} aria-valuemin={0} aria-valuemax={100} aria-label={label}>
        <div className={`h-2 rounded-full ${color}`} style={{ width: `${pct}%` }} />
      </div>
    </div>
  );
}
