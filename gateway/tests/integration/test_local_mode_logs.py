"""Local mode's logs through the operator's commands, in a copy of the checkout: `./start`
(simulator profile) writes the gateway's log through app.logpipe, which rotates it by size
(LOG_MAX_SIZE, LOG_MAX_FILE); `./logs` shows readable lines (time, level, event, request id,
status, latency) or `--json` the raw ones; `./logs vllm` is the local model server's log;
`./status` names the model and shows the processes' CPU and memory; `./stop` leaves no process
(the log writers end with what they write for)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.conftest import wait_until
from tests.integration.test_local_mode import _nothing_running, _pids_under, _run
from tests.integration.test_local_mode import checkout as checkout  # the module fixture

MAX = 6 * 1024


async def test_gateway_log_rotates_and_logs_reads_it(checkout: tuple[Path, int]) -> None:
    root, port = checkout
    _nothing_running(root)
    dist = root / "frontend" / "dist"
    if not (dist / "index.html").exists():  # this test needs no UI; don't build one
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "index.html").write_text('<!doctype html><div id="root"></div>')
    logs = root / ".run" / "logs"
    started = _run(
        root, "./start", timeout=180,
        MODEL_DEFAULT_PROFILE="simulator", LOG_MAX_SIZE=f"{MAX // 1024}k", LOG_MAX_FILE="3",
    )  # fmt: skip
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:

            async def rotated_twice() -> bool:
                # 404s are logged at info: each request one access line
                for _ in range(20):
                    assert (await c.get("/api/no-such-route")).status_code == 404
                return (logs / "gateway.log.2").exists()

            assert await wait_until(rotated_twice, timeout=120, interval=0)
            last = await c.get("/api/no-such-route", headers={"X-Request-ID": "rot-last"})
            assert last.status_code == 404
        assert not (logs / "gateway.log.3").exists()
        for name in ("gateway.log", "gateway.log.1", "gateway.log.2"):
            text = (logs / name).read_text()
            assert len(text.encode()) <= MAX, name
            for line in text.splitlines():  # whole JSON lines only, none cut in two
                if line.startswith("{"):
                    json.loads(line)

        async def logged() -> bool:
            return "rot-last" in (logs / "gateway.log").read_text()

        assert await wait_until(logged, timeout=10)
        readable = _run(root, "./logs", "gateway", "--no-follow", "-n", "30", timeout=30)
        assert readable.returncode == 0, readable.stderr
        line = next(x for x in readable.stdout.splitlines() if "rid=rot-last" in x)
        # time, level, event, request id, method and path, status, latency
        assert re.match(
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+INFO\s+request\s+rid=rot-last\s+"
            r"GET /api/no-such-route\s+404\s+[\d.]+ms",
            line,
        ), line
        raw = _run(root, "./logs", "--json", "--no-follow", "-n", "5", timeout=30)
        assert raw.returncode == 0 and raw.stdout.strip(), raw.stderr
        assert all(json.loads(x)["event"] for x in raw.stdout.splitlines())

        model = _run(root, "./logs", "vllm", "--no-follow", "-n", "200", timeout=30)
        assert model.returncode == 0, model.stderr
        assert "=== starting simulator" in model.stdout
        assert _run(root, "./logs", "nginx", "--no-follow", timeout=30).returncode == 1

        status = _run(root, "./status", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        out = status.stdout
        assert "model: simulator [process] status running, serving simulator-model" in out, out
        assert "health: healthy" in out and "CPU and memory" in out, out
        assert "python -m simulator" in out, out  # the model server's process, with its use
    finally:
        stopped = _run(root, "./stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    # the gateway, the simulator and both log writers are gone
    assert await wait_until(lambda: not _pids_under(root), timeout=30)
