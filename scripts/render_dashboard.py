#!/usr/bin/env python3
"""Render the Grafana dashboard's panels from a Prometheus server's real data, without Grafana.

Grafana is not in Debian's repositories and there is no container registry on the build
machines, so this draws the same panels itself: every target of
monitoring/grafana/dashboards/vllm-chat.json is run against Prometheus's HTTP API
(`/api/v1/query_range`, Grafana's `$__rate_interval` / `$__range` filled in), laid out on
Grafana's 24-column grid as an HTML page of inline SVG charts and stat tiles, and screenshot
with Debian's Chromium (headless) into a PNG.

    python3 scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 30 \
        --out dashboard.png

Writes OUT (PNG) and OUT with .html. Exit status 3 when no Chromium is installed (the HTML is
still written); 2 when Prometheus cannot be queried. Standard library only.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parents[1]
DASHBOARD = REPO_DIR / "monitoring" / "grafana" / "dashboards" / "vllm-chat.json"
COLORS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a")
CSS = "".join(
    (
        "body{margin:0;background:#111217;color:#ccccdc;font:12px DejaVu Sans,sans-serif}",
        "header{padding:10px 14px;font-size:16px;color:#fff}",
        "header span{font-size:12px;color:#8e8e8e}",
        ".panel,.row{position:absolute;box-sizing:border-box}",
        ".panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;",
        "padding:4px 6px;overflow:hidden}",
        ".row{font-size:14px;color:#fff;padding-top:6px}",
        ".title{font-weight:bold;margin-bottom:2px;color:#fff}",
        ".stat{font-size:30px;font-weight:bold;margin:2px 0}",
        ".nodata{color:#f2495c;padding:20px}",
        "svg text{fill:#9fa7b3;font-size:10px}",
    )
)
ROW_PX = 30  # Grafana's grid: 24 columns, rows of 30 px
WIDTH_PX = 1600


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> Any:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - an operator's URL
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "")
    return text or ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def fmt(value: float, unit: str | None) -> str:
    if not math.isfinite(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.0f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "reqps":
        return f"{value:.2f}/s"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024:
                return f"{value:.1f} {suffix}"
            value /= 1024
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def series_of(
    result: list[dict[str, Any]], template: str
) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for item in result:
        points = [(float(t), float(v)) for t, v in item.get("values", [])]
        points = [(t, v) for t, v in points if math.isfinite(v)]
        if points:
            out.append((legend(template, item.get("metric", {})), points))
    return out


def svg_chart(
    series: list[tuple[str, list[tuple[float, float]]]],
    start: float,
    end: float,
    unit: str | None,
    defaults: dict[str, Any],
    width: int,
    height: int,
    axes: bool = True,
) -> str:
    left, right, top, bottom = (58, 8, 8, 22) if axes else (0, 0, 2, 0)
    legend_h = 16 * ((len(series) + 2) // 3) if axes else 0
    plot_w, plot_h = width - left - right, height - top - bottom - legend_h
    values = [v for _, pts in series for _, v in pts]
    low = float(defaults.get("min", min(0.0, min(values))))
    high = float(defaults.get("max", max(values)))
    if high <= low:
        high = low + (abs(low) or 1.0)

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (min(max(v, low), high) - low) / (high - low) * plot_h

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5 if axes else 0):
        value = low + (high - low) * i / 4
        yy = y(value)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#2c3235"/>'
            f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">'
            f"{html.escape(fmt(value, unit))}</text>"
        )
    for i in range(5 if axes else 0):
        t = start + (end - start) * i / 4
        parts.append(
            f'<text x="{x(t):.1f}" y="{top + plot_h + 15}" text-anchor="middle">'
            f"{time.strftime('%H:%M:%S', time.gmtime(t))}</text>"
        )
    for index, (name, points) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        if len(points) == 1:
            t, v = points[0]
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="{color}"/>')
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        if not axes:
            continue
        lx = left + (index % 3) * (plot_w // 3)
        ly = top + plot_h + 22 + 16 * (index // 3)
        last = fmt(points[-1][1], unit)
        parts.append(
            f'<rect x="{lx}" y="{ly + 4}" width="10" height="3" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{ly + 10}">'
            f"{html.escape(name)} (last {html.escape(last)})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(prometheus: str, board: dict[str, Any], minutes: float, rate_interval: str) -> str:
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, minutes * 60 / 240)
    cells = []
    max_bottom = 0
    col_px = WIDTH_PX / 24
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    data: dict[int, list[tuple[str, list[tuple[float, float]]]]] = {}
    for panel in panels:
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            expr = expr.replace("$__range", f"{int(minutes)}m").replace("$__interval", f"{step:g}s")
            result = query_range(prometheus, expr, start, end, step)
            series.extend(series_of(result, target.get("legendFormat", "")))
        data[id(panel)] = series
    # the time axis starts where the data do (a short run fills the width)
    first = [pts[0][0] for series in data.values() for _, pts in series]
    if first:
        start = max(start, min(first) - step)
    for panel in panels:
        pos = panel["gridPos"]
        left, top = pos["x"] * col_px, pos["y"] * ROW_PX
        width, height = pos["w"] * col_px - 6, pos["h"] * ROW_PX - 6
        max_bottom = max(max_bottom, top + height)
        title = html.escape(panel.get("title", ""))
        style = f"left:{left:.0f}px;top:{top}px;width:{width:.0f}px;height:{height}px"
        if panel["type"] == "row":
            cells.append(f'<div class="row" style="{style}">{title}</div>')
            continue
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit")
        series = data[id(panel)]
        if not series:
            body = '<div class="nodata">no data</div>'
        elif panel["type"] == "stat":
            value = series[0][1][-1][1]
            text = fmt(value, unit)
            for mapping in defaults.get("mappings", []):
                option = mapping.get("options", {}).get(
                    str(int(value)) if value.is_integer() else ""
                )
                if option:
                    text = option.get("text", text)
            color = "#73bf69"
            steps = defaults.get("thresholds", {}).get("steps", [])
            for step_def in steps:
                if step_def.get("value") is not None and value >= step_def["value"]:
                    color = "#f2495c"
            if text in ("DOWN",):
                color = "#f2495c"
            spark = svg_chart(
                series[:1],
                start,
                end,
                unit,
                defaults,
                int(width) - 12,
                int(height) - 70,
                axes=False,
            )
            body = f'<div class="stat" style="color:{color}">{html.escape(text)}</div>{spark}'
        else:
            body = svg_chart(series, start, end, unit, defaults, int(width) - 12, int(height) - 34)
        cells.append(
            f'<div class="panel" style="{style}"><div class="title">{title}</div>{body}</div>'
        )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end))
    name = html.escape(board["title"])
    since = time.strftime("%H:%M:%S", time.gmtime(start))
    note = (
        f"rendered from Prometheus {html.escape(prometheus)}, {since} to {stamp}, by "
        "scripts/render_dashboard.py (Grafana's panels, drawn without Grafana)"
    )
    size = f".grid{{position:relative;width:{WIDTH_PX}px;height:{max_bottom + 10}px;margin:0 8px}}"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{name}</title>'
        f"<style>{CSS}{size}</style></head><body>"
        f"<header>{name} <span>- {note}</span></header>"
        f'<div class="grid">{"".join(cells)}</div></body></html>\n'
    )


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: Path, out: Path, height: int) -> None:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("no chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(  # noqa: S603 - the browser found on PATH, our own arguments
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH_PX + 16},{height}",
                f"--screenshot={out}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval becomes")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args(argv)
    board = json.loads(args.dashboard.read_text())
    try:
        page = render_html(args.prometheus, board, args.minutes, args.rate_interval)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        print(f"render_dashboard: cannot query {args.prometheus}: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    html_path = args.out.with_suffix(".html")
    html_path.write_text(page)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"]) * ROW_PX
    try:
        screenshot(html_path.resolve(), args.out.resolve(), bottom + 60)
    except FileNotFoundError:
        print(f"render_dashboard: no Chromium; wrote {html_path} only", file=sys.stderr)
        return 3
    print(f"wrote {args.out} and {html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
