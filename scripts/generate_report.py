#!/usr/bin/env python3
"""Turn one k6 results folder (scripts/benchmark.sh writes k6/results/<timestamp>/) into
`report.html`, a self-contained page with inline SVG charts (latency percentiles over time,
TTFT distribution, throughput, error rate, thresholds), and `summary.md`, the summary of seed
003's report template. Standard library only.

The folder holds, per k6 script, `<script>.summary.json` (written by handleSummary in
k6/lib/helpers.js) and `<script>.jsonl.gz` (k6 `--out json=`), plus `meta.json` from the
benchmark. The raw time series is reduced to `<script>.timeseries.json` (buckets and a TTFT
histogram); with --drop-raw the raw file is deleted afterwards.

    python3 scripts/generate_report.py k6/results/20260101T000000Z [--drop-raw]
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SCRIPT_ORDER = [
    "load-test",
    "streaming-test",
    "comprehensive-test",
    "auth-flow-test",
    "model-management-test",
]
WANTED_METRICS = (
    "http_reqs",
    "http_req_duration",
    "http_req_failed",
    "ttft",
    "vus",
    "stream_errors",
    "completion_tokens",
)
COLORS = ["#2563eb", "#ea580c", "#dc2626", "#16a34a", "#7c3aed", "#0891b2"]
_TIME_RE = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


# ---------------------------------------------------------------- reading k6 output


def started_at(meta: dict[str, Any]) -> str:
    """The run's start as `2026-11-21 21:51:15 UTC` (benchmark.sh stores `20261121T215115Z`)."""
    raw = str(meta.get("started_at", "unknown"))
    try:
        return datetime.strptime(raw, "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return raw


def parse_time(text: str) -> float:
    """k6's RFC 3339 timestamps carry nanoseconds; datetime takes microseconds."""
    match = _TIME_RE.match(text)
    if not match:
        raise ValueError(f"not a k6 timestamp: {text!r}")
    base, fraction, zone = match.groups()
    fraction = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(f"{base}.{fraction}{zone}").timestamp()


def read_points(path: Path) -> Iterator[tuple[str, float, float, dict[str, str]]]:
    """(metric, unix time, value, tags) for the points of the metrics the report uses."""
    opener = gzip.open if path.suffix == ".gz" else open
    needles = tuple(f'"{name}"' for name in WANTED_METRICS)
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if '"Point"' not in line or not any(needle in line for needle in needles):
                continue  # cheap skip of the many metrics the report does not draw
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if record.get("type") != "Point" or record.get("metric") not in WANTED_METRICS:
                continue
            data = record["data"]
            yield (
                record["metric"],
                parse_time(data["time"]),
                float(data["value"]),
                data.get("tags") or {},
            )


def percentile(values: list[float], p: float) -> float | None:
    """k6's percentile: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (about five grid steps)."""
    if value <= 0:
        return 1.0
    step = nice_step(value, 5)
    return step * math.ceil(value / step - 1e-9)


def histogram(values: list[float], bins: int = 30) -> dict[str, list[float]]:
    if not values:
        return {"edges": [], "counts": []}
    top = max(values)
    width = nice_step(top if top > 0 else 1.0, bins)
    count = max(1, math.ceil(top / width + 1e-9))
    if top >= count * width:
        count += 1
    counts = [0.0] * count
    for value in values:
        counts[min(int(value // width), count - 1)] += 1
    return {"edges": [round(i * width, 6) for i in range(count + 1)], "counts": counts}


def compact_timeseries(raw: Path, max_buckets: int = 120) -> dict[str, Any]:
    """Reduce k6's per-sample JSON lines to time buckets and a TTFT histogram."""
    points = list(read_points(raw))
    if not points:
        return {"bucket_s": 1, "start": None, "buckets": [], "ttft_hist": histogram([])}
    start = min(t for _, t, _, _ in points)
    end = max(t for _, t, _, _ in points)
    bucket_s = max(1, math.ceil((end - start + 1e-9) / max_buckets))
    # The latency lines follow the chat requests where the script sends any, else all requests.
    chat_kinds = {"chat", "stream"}
    has_chat = any(
        m == "http_req_duration" and tags.get("kind") in chat_kinds for m, _, _, tags in points
    )
    count = int((end - start) // bucket_s) + 1
    buckets: list[dict[str, Any]] = [
        {
            "t": i * bucket_s,
            "reqs": 0,
            "failed": 0,
            "lat": [],
            "ttft": [],
            "vus": 0.0,
            "streams": 0,
            "stream_errors": 0,
            "tokens": 0.0,
        }
        for i in range(count)
    ]
    ttft_all: list[float] = []
    for metric, t, value, tags in points:
        b = buckets[int((t - start) // bucket_s)]
        if metric == "http_reqs":
            b["reqs"] += 1
        elif metric == "http_req_failed":
            b["failed"] += 1 if value else 0
        elif metric == "http_req_duration":
            if not has_chat or tags.get("kind") in chat_kinds:
                b["lat"].append(value)
        elif metric == "ttft":
            b["ttft"].append(value)
            ttft_all.append(value)
        elif metric == "vus":
            b["vus"] = max(b["vus"], value)
        elif metric == "stream_errors":
            b["streams"] += 1
            b["stream_errors"] += 1 if value else 0
        elif metric == "completion_tokens":
            b["tokens"] += value
    out: list[dict[str, Any]] = []
    for b in buckets:
        lat, ttft = b.pop("lat"), b.pop("ttft")
        b["lat_n"] = len(lat)
        for p in (50, 95, 99):
            b[f"p{p}"] = _round(percentile(lat, p))
        b["ttft_p95"] = _round(percentile(ttft, 95))
        out.append(b)
    return {
        "bucket_s": bucket_s,
        "start": datetime.fromtimestamp(start).astimezone().isoformat(timespec="seconds"),
        "latency_of": "chat requests" if has_chat else "all requests",
        "buckets": out,
        "ttft_hist": histogram(ttft_all),
        "ttft_n": len(ttft_all),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---------------------------------------------------------------- the results folder


@dataclass
class Run:
    name: str
    summary: dict[str, Any] | None
    series: dict[str, Any] | None
    exit_code: int | None

    def metric(self, name: str) -> dict[str, Any] | None:
        if not self.summary:
            return None
        metric: dict[str, Any] | None = self.summary.get("metrics", {}).get(name)
        return metric

    def value(self, name: str, stat: str) -> float | None:
        metric = self.metric(name)
        if not metric:
            return None
        values = metric.get("values", {})
        if stat == "count" and metric.get("type") == "rate":
            return float(values.get("passes", 0) + values.get("fails", 0))
        value = values.get(stat)
        if value is None:
            return None
        if self._samples(metric) == 0:
            return None
        return float(value)

    @staticmethod
    def _samples(metric: dict[str, Any]) -> float | None:
        values = metric.get("values", {})
        if metric.get("type") == "rate":
            return float(values.get("passes", 0) + values.get("fails", 0))
        if metric.get("type") == "trend" and "count" in values:
            return float(values["count"])
        return None

    def thresholds(self) -> list[tuple[str, str, bool, float | None]]:
        """(metric, expression, passed, samples) for every threshold of the run."""
        rows = []
        for name, metric in sorted((self.summary or {}).get("metrics", {}).items()):
            for expr, result in (metric.get("thresholds") or {}).items():
                ok = result.get("ok") if isinstance(result, dict) else not result
                rows.append((name, expr, bool(ok), self._samples(metric)))
        return rows

    @property
    def duration_s(self) -> float | None:
        if not self.summary:
            return None
        ms = self.summary.get("state", {}).get("testRunDurationMs")
        return None if ms is None else ms / 1000

    @property
    def thresholds_tally(self) -> str:
        """`passed/declared`, e.g. `6/6`."""
        rows = self.thresholds()
        return f"{sum(1 for r in rows if r[2])}/{len(rows)}"

    @property
    def passed(self) -> bool:
        if self.exit_code not in (None, 0):
            return False
        return bool(self.summary) and all(ok for _, _, ok, _ in self.thresholds())


def load_runs(folder: Path, drop_raw: bool = False) -> tuple[dict[str, Any], list[Run]]:
    meta_path = folder / "meta.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    names = {p.name.removesuffix(".summary.json") for p in folder.glob("*.summary.json")}
    names |= {p.name.removesuffix(".jsonl.gz") for p in folder.glob("*.jsonl.gz")}
    names |= set(meta.get("runs", {}))
    ordered = [n for n in SCRIPT_ORDER if n in names] + sorted(names - set(SCRIPT_ORDER))
    runs = []
    for name in ordered:
        summary_path = folder / f"{name}.summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        series_path = folder / f"{name}.timeseries.json"
        raw_path = folder / f"{name}.jsonl.gz"
        if raw_path.exists():
            series = compact_timeseries(raw_path)
            series_path.write_text(json.dumps(series, separators=(",", ":")))
            if drop_raw:
                raw_path.unlink()
        elif series_path.exists():
            series = json.loads(series_path.read_text())
        else:
            series = None
        exit_code = meta.get("runs", {}).get(name, {}).get("exit_code")
        runs.append(Run(name, summary, series, exit_code))
    return meta, runs


# ---------------------------------------------------------------- service-level targets


@dataclass
class Target:
    label: str
    value: float | None
    goal: str
    ok: bool | None
    display: str
    source: str


def _first(runs: dict[str, Run], choices: list[tuple[str, str, str]]) -> tuple[float | None, str]:
    for script, metric, stat in choices:
        run = runs.get(script)
        if run is not None:
            value = run.value(metric, stat)
            if value is not None:
                return value, f"{script}: {metric} {stat}"
    return None, ""


def _seconds(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms / 1000:.2f} s"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"


def peak_rps(run: Run, window_s: float = 10.0) -> float | None:
    """Requests per second over the busiest stretch of at least `window_s` seconds."""
    series = run.series or {}
    buckets, width = series.get("buckets") or [], series.get("bucket_s") or 1
    per = max(1, math.ceil(window_s / width))
    if len(buckets) < per:
        return None
    counts = [float(b["reqs"]) for b in buckets]
    best = max(sum(counts[i : i + per]) for i in range(len(counts) - per + 1))
    return best / (per * float(width))


def evaluate_targets(run_list: list[Run]) -> list[Target]:
    """The seed's performance targets, read from the scripts that measure them."""
    runs = {r.name: r for r in run_list}
    chat = [
        ("load-test", "http_req_duration{endpoint:chat}"),
        ("comprehensive-test", "http_req_duration{scenario:chat_load}"),
        ("auth-flow-test", "http_req_duration{endpoint:chat}"),
    ]
    targets: list[Target] = []

    def add(
        label: str, choices: list[tuple[str, str, str]], goal: str, limit: float, kind: str
    ) -> None:
        value, source = _first(runs, choices)
        if kind == "ms<":
            ok, shown = (None if value is None else value < limit), _seconds(value)
        elif kind == "rate<":
            ok, shown = (None if value is None else value < limit), _percent(value)
        elif kind == "rate>":
            ok, shown = (None if value is None else value > limit), _percent(value)
        else:  # a plain number above the limit
            ok, shown = (
                (None if value is None else value > limit),
                ("n/a" if value is None else f"{value:.1f}"),
            )
        targets.append(Target(label, value, goal, ok, shown, source))

    add("Response time p50", [(s, m, "med") for s, m in chat], "< 1.5 s", 1500, "ms<")
    add("Response time p95", [(s, m, "p(95)") for s, m in chat], "< 3 s", 3000, "ms<")
    add("Response time p99", [(s, m, "p(99)") for s, m in chat], "< 5 s", 5000, "ms<")
    add("Max response time", [(s, m, "max") for s, m in chat], "< 10 s", 10000, "ms<")
    add(
        "TTFT p95",
        [(s, "ttft", "p(95)") for s in ("streaming-test", "load-test", "comprehensive-test")],
        "< 2 s",
        2000,
        "ms<",
    )
    add(
        "Error rate",
        [(s, "http_req_failed", "rate") for s in ("load-test", "comprehensive-test")],
        "< 1%",
        0.01,
        "rate<",
    )
    add(
        "Streaming error rate",
        [(s, "stream_errors", "rate") for s in ("streaming-test", "comprehensive-test")],
        "< 5%",
        0.05,
        "rate<",
    )
    add(
        "API p95",
        [("comprehensive-test", "http_req_duration{scenario:api_stability}", "p(95)")],
        "< 5 s",
        5000,
        "ms<",
    )
    add(
        "Model switch success",
        [("model-management-test", "switch_success", "rate")],
        "> 90%",
        0.9,
        "rate>",
    )
    # Throughput: the run's average, and its best 10-second-or-longer stretch (the capacity the
    # target is about; ramp-up and ramp-down pull the average down).
    rps, source = _first(runs, [("load-test", "http_reqs", "rate")])
    peak = peak_rps(runs["load-test"]) if "load-test" in runs else None
    best = peak if peak is not None else rps
    targets.append(
        Target(
            "Throughput",
            best,
            "> 20 RPS",
            None if best is None else best > 20,
            "n/a"
            if rps is None
            else f"{rps:.1f} RPS average" + ("" if peak is None else f", {peak:.1f} RPS peak"),
            source,
        )
    )
    tokens, source = _first(runs, [("load-test", "completion_tokens", "rate")])
    per_min = None if tokens is None else tokens * 60
    targets.append(
        Target(
            "Tokens generated",
            per_min,
            "> 1000 tokens/min",
            None if per_min is None else per_min > 1000,
            "n/a" if per_min is None else f"{per_min:.0f} tokens/min",
            source,
        )
    )
    return targets


def recommendations(targets: list[Target], runs: list[Run]) -> list[str]:
    missed = {t.label for t in targets if t.ok is False}
    tips = []
    if missed & {"TTFT p95", "Response time p50", "Response time p95", "Response time p99"}:
        tips.append(
            "Answers or first tokens are slow under load: look at the model server's queue "
            "(vLLM `--max-num-seqs`, GPU memory utilisation `VLLM_UTIL`, a smaller or quantised "
            "model) before the gateway; compare the TTFT with a single user's."
        )
    if missed & {"Error rate", "Streaming error rate"}:
        tips.append(
            "Requests failed: the gateway log's `status_code`/`error_code` fields and the k6 "
            "logs in this folder say which (429 rate limits for the test user, 502/504 from the "
            "model server, 503 during a switch)."
        )
    if "Throughput" in missed:
        tips.append(
            "Throughput is bounded by the number of virtual users times their pace (answer "
            "time plus think time): raise MAX_VUS or use the stress profile to find the "
            "server's limit rather than the test's."
        )
    if "Model switch success" in missed:
        tips.append("Model switches failed: see the status history and the model server's log.")
    failed_runs = [r.name for r in runs if not r.passed]
    if failed_runs and not tips:
        tips.append(
            "Thresholds failed in " + ", ".join(failed_runs) + ": see the per-script tables."
        )
    if not tips:
        tips.append(
            "Every target is met at this load; run the stress profile (K6_PROFILE=stress) "
            "to find where it stops being true."
        )
    return tips


# ---------------------------------------------------------------- markdown summary


def markdown_summary(meta: dict[str, Any], runs: list[Run], targets: list[Target]) -> str:
    met = [t for t in targets if t.ok is True]
    missed = [t for t in targets if t.ok is False]
    unmeasured = [t for t in targets if t.ok is None]
    lines = [
        "# vLLM chat service: performance test report",
        "",
        "## Test environment",
        f"- **Date**: {started_at(meta)}",
        f"- **Model**: {meta.get('model') or 'unknown'}",
        f"- **Serving**: {meta.get('stack', 'unknown')}",
        f"- **System**: {meta.get('system', 'unknown')}",
        f"- **Profile**: {meta.get('profile', 'unknown')} against {meta.get('base_url', '?')}"
        + (f" ({meta['env']})" if meta.get("env") else ""),
        f"- **k6**: {meta.get('k6', 'unknown')}, commit {meta.get('git_commit') or 'unknown'}",
        "",
        "## Results summary",
        "### ✅ Targets met",
    ]
    lines += [f"- **{t.label}**: {t.display} (target: {t.goal}) ✅" for t in met] or ["- none"]
    lines += ["", "### ⚠ Needs improvement"]
    lines += [f"- **{t.label}**: {t.display} (target: {t.goal}) ❌" for t in missed] or ["- none"]
    if unmeasured:
        lines += ["", "Not measured in this run: " + ", ".join(t.label for t in unmeasured) + "."]
    lines += [
        "",
        "## Scripts",
        "",
        "| script | result | k6 exit | duration | requests | thresholds passed |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        reqs = run.value("http_reqs", "count")
        lines.append(
            f"| {run.name} | {'PASS' if run.passed else 'FAIL'} | {run.exit_code} | "
            f"{'n/a' if run.duration_s is None else f'{run.duration_s:.0f} s'} | "
            f"{'n/a' if reqs is None else int(reqs)} | {run.thresholds_tally} |"
        )
    failed = [(run.name, m, e) for run in runs for m, e, ok, _ in run.thresholds() if not ok]
    if failed:
        lines += ["", "Failed thresholds:"]
        lines += [f"- {name}: `{m}` `{e}`" for name, m, e in failed]
    lines += ["", "## Recommended optimisations"]
    lines += [f"{i}. {tip}" for i, tip in enumerate(recommendations(targets, runs), 1)]
    avg, _ = _first(
        {r.name: r for r in runs},
        [
            ("load-test", "http_req_duration{endpoint:chat}", "avg"),
            ("comprehensive-test", "http_req_duration{scenario:chat_load}", "avg"),
        ],
    )
    by_label = {t.label: t for t in targets}
    lines += [
        "",
        f"- Average response time: {'n/a' if avg is None else f'{avg / 1000:.2f} s'}",
        f"- Throughput: {by_label['Throughput'].display}",
        f"- Error rate: {by_label['Error rate'].display}",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- SVG charts

W, H = 560, 240
PAD_L, PAD_R, PAD_T, PAD_B = 58, 16, 28, 36


def _fmt_tick(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value / 1000:g}s" if value >= 1000 else f"{value:g}ms"
    if unit == "%":
        return f"{value:g}%"
    if unit == "s":
        return f"{value:g}s"
    return f"{value:g}"


def _axes(x_max: float, y_max: float, x_unit: str, y_unit: str, title: str) -> list[str]:
    parts = [
        f'<svg viewBox="0 0 {W} {H}" class="chart" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{PAD_L}" y="16" class="title">{html.escape(title)}</text>',
    ]
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = nice_step(y_max, 5)
    value = 0.0
    while value <= y_max + 1e-9:
        y = PAD_T + inner_h - value / y_max * inner_h
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{_fmt_tick(value, y_unit)}</text>"
        )
        value += step
    step = nice_step(x_max, 6)
    value = 0.0
    while value <= x_max + 1e-9:
        x = PAD_L + value / x_max * inner_w
        parts.append(
            f'<text x="{x:.1f}" y="{H - PAD_B + 16}" class="tick" text-anchor="middle">'
            f"{_fmt_tick(value, x_unit)}</text>"
        )
        value += step
    parts.append(
        f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{PAD_T + inner_h}" y2="{PAD_T + inner_h}" '
        'class="axis"/>'
    )
    return parts


def _legend(items: list[tuple[str, str, bool]]) -> str:
    parts, x = [], W - PAD_R
    for label, color, dashed in reversed(items):
        width = 7 * len(label) + 24
        x -= width
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 14}" y1="12" y2="12" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{x + 18}" y="16" class="legend">{html.escape(label)}</text>'
        )
    return "".join(parts)


def line_chart(
    title: str,
    series: list[tuple[str, list[tuple[float, float | None]]]],
    y_unit: str,
    thresholds: list[tuple[str, float]] | None = None,
    y_floor: float = 0.0,
) -> str:
    xs = [x for _, pts in series for x, y in pts if y is not None]
    ys = [y for _, pts in series for _, y in pts if y is not None]
    thresholds = thresholds or []
    if not xs:
        return f'<p class="empty">{html.escape(title)}: no samples</p>'
    x_max = max(max(xs), 1.0)
    # Thresholds near the data are drawn; far above it they would flatten the lines.
    y_top = max([*ys, y_floor, 1e-9] + [v for _, v in thresholds if v <= max(ys) * 3])
    y_max = nice_max(y_top * 1.1)
    parts = _axes(x_max, y_max, "s", y_unit, title)
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    legend = []
    for i, (label, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        legend.append((label, color, False))
        path, pen_down = [], False
        for x, y in pts:
            if y is None:
                pen_down = False
                continue
            px = PAD_L + x / x_max * inner_w
            py = PAD_T + inner_h - min(y, y_max) / y_max * inner_h
            path.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
            pen_down = True
        parts.append(
            f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="1.8"/>'
        )
    for label, value in thresholds:
        if value > y_max:
            continue
        y = PAD_T + inner_h - value / y_max * inner_h
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="limit"/>'
            f'<text x="{W - PAD_R - 4}" y="{y - 4:.1f}" class="limit-label" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
    parts.append(_legend(legend))
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(
    title: str, hist: dict[str, list[float]], marks: list[tuple[str, float, str]]
) -> str:
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if not counts:
        return f'<p class="empty">{html.escape(title)}: no samples</p>'
    x_max = max([edges[-1]] + [v * 1.05 for _, v, _ in marks if v <= edges[-1] * 4])
    y_max = nice_max(max(counts) * 1.1)
    parts = _axes(x_max, y_max, "ms", "", title)
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    for i, count in enumerate(counts):
        x0 = PAD_L + edges[i] / x_max * inner_w
        x1 = PAD_L + edges[i + 1] / x_max * inner_w
        h = count / y_max * inner_h
        parts.append(
            f'<rect x="{x0 + 0.5:.1f}" y="{PAD_T + inner_h - h:.1f}" '
            f'width="{max(x1 - x0 - 1, 1):.1f}"'
            f' height="{h:.1f}" fill="{COLORS[0]}"><title>{edges[i]:g}-{edges[i + 1]:g} ms: '
            f"{int(count)}</title></rect>"
        )
    legend = []
    for label, value, color in marks:
        if value > x_max:
            continue
        x = PAD_L + value / x_max * inner_w
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{PAD_T + inner_h}" '
            f'stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
        legend.append((label, color, True))
    parts.append(_legend(legend))
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- HTML report

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px}
.meta{color:#4b5563;margin:0 0 16px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.pass{background:#dcfce7;color:#166534}.fail{background:#fee2e2;color:#991b1b}
.na{background:#e5e7eb;color:#374151}
table{border-collapse:collapse;background:#fff;margin:8px 0 12px;width:100%}
td,th{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
section.run{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;
margin:16px 0}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
svg.chart{width:100%;height:auto;background:#fff;border:1px solid #f3f4f6}
svg .title{font-size:13px;font-weight:600;fill:#111827}
svg .tick{font-size:10px;fill:#6b7280}svg .legend{font-size:11px;fill:#374151}
svg .grid{stroke:#f3f4f6}svg .axis{stroke:#9ca3af}
svg .limit{stroke:#dc2626;stroke-dasharray:5 4;stroke-width:1}
svg .limit-label{font-size:10px;fill:#dc2626}
.empty{color:#6b7280;font-style:italic}
code{background:#f3f4f6;padding:0 3px;border-radius:3px}
"""


def _badge(ok: bool | None) -> str:
    if ok is None:
        return '<span class="badge na">n/a</span>'
    return f'<span class="badge {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span>'


def _stat(metric: dict[str, Any], stat: str) -> str:
    value = metric.get("values", {}).get(stat)
    if value is None:
        return ""
    if metric.get("type") == "rate":
        return f"{value * 100:.2f}%"
    if stat == "count":
        return str(int(value))
    if metric.get("contains") == "time":
        return f"{value / 1000:.3f} s" if value >= 1000 else f"{value:.1f} ms"
    return f"{value:g}" if isinstance(value, int) else f"{value:.2f}"


KEY_METRICS = (
    "http_reqs",
    "http_req_failed",
    "http_req_duration",
    "ttft",
    "stream_errors",
    "stream_chunks",
    "completion_tokens",
    "tokens_per_second",
    "checks",
    "iterations",
    "vus_max",
    "switch_success",
    "model_switch_duration",
    "model_switch_reported_duration",
    "auth_rejections_ok",
    "login_duration",
)


def run_section(run: Run) -> str:
    out = [f'<section class="run" id="{html.escape(run.name)}">']
    duration = "" if run.duration_s is None else f", {run.duration_s:.0f} s"
    out.append(
        f"<h2>{html.escape(run.name)} {_badge(run.passed)}</h2>"
        f'<p class="meta">k6 exit code {run.exit_code}{duration}</p>'
    )
    if run.summary is None:
        out.append('<p class="empty">No summary: the run did not finish.</p></section>')
        return "".join(out)
    rows = run.thresholds()
    out.append("<h3>Thresholds</h3><table><tr><th>metric</th><th>threshold</th><th>result</th>")
    out.append("<th>samples</th></tr>")
    for name, expr, ok, samples in rows:
        out.append(
            f"<tr><td><code>{html.escape(name)}</code></td><td><code>{html.escape(expr)}</code>"
            f"</td><td>{_badge(ok)}</td><td class='num'>"
            f"{'' if samples is None else int(samples)}</td></tr>"
        )
    out.append("</table>")
    series = run.series or {}
    buckets = series.get("buckets") or []
    charts = []
    if buckets:
        width = series.get("bucket_s", 1)
        latency = [
            (f"p{p}", [(b["t"] + width / 2, b.get(f"p{p}")) for b in buckets]) for p in (50, 95, 99)
        ]
        charts.append(
            line_chart(
                f"Latency percentiles over time ({series.get('latency_of', 'requests')})",
                latency,
                "ms",
                [("p50 1.5s", 1500), ("p95 3s", 3000), ("p99 5s", 5000)]
                if series.get("latency_of") == "chat requests"
                else [],
            )
        )
        charts.append(
            line_chart(
                f"Throughput (per {width}s bucket)",
                [
                    ("requests/s", [(b["t"] + width / 2, b["reqs"] / width) for b in buckets]),
                    ("VUs", [(b["t"] + width / 2, b["vus"]) for b in buckets]),
                ],
                "",
            )
        )
        error_series = [
            (
                "failed requests %",
                [
                    (b["t"] + width / 2, 100 * b["failed"] / b["reqs"] if b["reqs"] else None)
                    for b in buckets
                ],
            )
        ]
        if any(b["streams"] for b in buckets):
            error_series.append(
                (
                    "stream errors %",
                    [
                        (
                            b["t"] + width / 2,
                            100 * b["stream_errors"] / b["streams"] if b["streams"] else None,
                        )
                        for b in buckets
                    ],
                )
            )
        limits = [("1%", 1.0)] + ([("streams 5%", 5.0)] if len(error_series) > 1 else [])
        charts.append(
            line_chart(
                "Error rate over time", error_series, "%", limits, y_floor=limits[-1][1] * 1.5
            )
        )
    ttft = run.metric("ttft")
    hist = series.get("ttft_hist") or {}
    if hist.get("counts"):
        marks = [("TTFT target 2s", 2000.0, "#dc2626")]
        if ttft and ttft.get("values", {}).get("p(95)") is not None:
            marks.insert(0, ("p95", float(ttft["values"]["p(95)"]), "#ea580c"))
        charts.append(
            histogram_chart(f"TTFT distribution ({series.get('ttft_n', 0)} streams)", hist, marks)
        )
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    out.append("<h3>Metrics</h3><table><tr><th>metric</th>")
    stats = ["avg", "med", "p(95)", "p(99)", "max", "count", "rate"]
    out.append("".join(f"<th>{s}</th>" for s in stats) + "</tr>")
    metrics = run.summary.get("metrics", {})
    names = [n for n in KEY_METRICS if n in metrics] + sorted(
        n for n in metrics if "{" in n and n.split("{")[0] in KEY_METRICS
    )
    for name in names:
        metric = metrics[name]
        cells = "".join(f"<td class='num'>{_stat(metric, s)}</td>" for s in stats)
        out.append(f"<tr><td><code>{html.escape(name)}</code></td>{cells}</tr>")
    out.append("</table></section>")
    return "".join(out)


def html_report(meta: dict[str, Any], runs: list[Run], targets: list[Target], md: str) -> str:
    overall = bool(runs) and all(r.passed for r in runs)
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>k6 report {html.escape(started_at(meta))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>vLLM chat service: performance test report {_badge(overall)}</h1>",
        f"<p class='meta'>{html.escape(started_at(meta))} · profile "
        f"<b>{html.escape(str(meta.get('profile', '?')))}</b> · "
        f"{html.escape(str(meta.get('base_url', '')))} · "
        f"{html.escape(str(meta.get('stack', '')))} · model "
        f"{html.escape(str(meta.get('model') or 'unknown'))} · "
        f"{html.escape(str(meta.get('system', '')))}</p>",
        "<h2>Targets (seed 003)</h2><table><tr><th>target</th><th>measured</th><th>goal</th>"
        "<th>result</th><th>source</th></tr>",
    ]
    for t in targets:
        out.append(
            f"<tr><td>{html.escape(t.label)}</td><td class='num'>{html.escape(t.display)}</td>"
            f"<td>{html.escape(t.goal)}</td><td>{_badge(t.ok)}</td>"
            f"<td><code>{html.escape(t.source)}</code></td></tr>"
        )
    out.append("</table><h2>Scripts</h2><table><tr><th>script</th><th>result</th>")
    out.append("<th>thresholds</th><th>requests</th><th>duration</th></tr>")
    for run in runs:
        reqs = run.value("http_reqs", "count")
        out.append(
            f"<tr><td><a href='#{html.escape(run.name)}'>{html.escape(run.name)}</a></td>"
            f"<td>{_badge(run.passed)}</td><td class='num'>{run.thresholds_tally}</td>"
            f"<td class='num'>{'' if reqs is None else int(reqs)}</td>"
            f"<td class='num'>{'' if run.duration_s is None else f'{run.duration_s:.0f} s'}</td>"
            "</tr>"
        )
    out.append("</table>")
    out.extend(run_section(run) for run in runs)
    out.append(
        "<h2>Markdown summary</h2><pre style='white-space:pre-wrap;background:#fff;"
        f"border:1px solid #e5e7eb;padding:12px'>{html.escape(md)}</pre>"
    )
    out.append("</main></body></html>\n")
    return "".join(out)


# ---------------------------------------------------------------- entry point


def generate(folder: Path, drop_raw: bool = False) -> tuple[Path, Path]:
    meta, runs = load_runs(folder, drop_raw=drop_raw)
    if not runs:
        raise SystemExit(f"no k6 results in {folder}")
    targets = evaluate_targets(runs)
    md = markdown_summary(meta, runs, targets)
    md_path, html_path = folder / "summary.md", folder / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(html_report(meta, runs, targets, md), encoding="utf-8")
    return html_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a k6/results/<timestamp> folder")
    parser.add_argument(
        "--drop-raw", action="store_true", help="delete the raw time series once reduced"
    )
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    html_path, md_path = generate(args.folder, drop_raw=args.drop_raw)
    print(md_path.read_text(encoding="utf-8"))
    print(f"HTML report: {html_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
