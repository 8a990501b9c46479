"""Issue 17's benchmark runs end to end (a short version: it proves the harness works; no timing
is asserted, the machine running CI is not a benchmark machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_nginx import ensure_nginx

GATEWAY_DIR = Path(__file__).resolve().parents[2]


def test_hot_path_benchmark_short_run() -> None:
    ensure_nginx()  # the nginx reference is part of the table
    cpu = str(min(os.sched_getaffinity(0)))
    args = [sys.executable, "-m", "benchmarks.hot_path", "--rounds", "1", "--seconds", "0.3"]
    args += ["--concurrency", "4", "--streams", "20", "--streams-seconds", "1"]
    args += ["--gate-wait", "0", "--gateway-cpus", cpu, "--load-cpus", cpu]
    done = subprocess.run(
        args, cwd=GATEWAY_DIR, capture_output=True, text=True, timeout=400, check=False
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "nginx: yes" in out
    # every section printed its figures, with every target in the table
    assert "| load | direct | nginx | bare | gateway | gateway/bare |" in out
    assert "| c4, 16 chunks: req/s |" in out
    assert "| c4: CPU per request | - |" in out
    assert "| c4: errors | 0 | 0 | 0 | 0 | |" in out
    assert "| TTFT p50 added over direct | - |" in out
    assert "| errors | 0 | 0 | 0 | 0 |" in out
    assert "/api/chat with persistence" in out and "errors=0" in out.split("/api/chat")[1]
    assert "20 concurrent streams" in out and "ok=20 errors=0" in out
    assert "--workers 2 vs 1" in out and "c64 /v1 streams: 1 worker" in out
    assert "load gate (machine busy before each run" in out
