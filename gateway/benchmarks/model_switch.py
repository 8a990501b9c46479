"""How long a model switch takes on the process runtime, and how long chat requests wait for it.

Starts a gateway process (SQLite, limits off) whose model manager runs two simulator profiles as
child processes, keeps `--concurrency` users streaming chat answers, switches back and forth
`--switches` times, and prints: each switch's duration (request → new model answering, from the
manager's history), its drain time (answers in progress finishing on the old model), and the
chat latency of requests that overlapped a switch against those that did not.

    cd gateway && .venv/bin/python -m benchmarks.model_switch --switches 6 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.ports import free_port
from tests.sim_process import SIM_COMMAND

GATEWAY_DIR = Path(__file__).resolve().parents[1]


def profiles(load_delay_s: float) -> dict[str, Any]:
    def sim(model: str) -> dict[str, Any]:
        return {
            "name": model,
            "model_id": model,
            "runtime": "process",
            "cpu_only": True,
            "command": [
                *SIM_COMMAND,
                "--ttft-ms",
                "50",
                "--itl-ms",
                "10",
                "--tokens",
                "30",
                "--startup-delay-s",
                str(load_delay_s),
            ],
        }

    return {"profiles": {"sim-a": sim("sim-a"), "sim-b": sim("sim-b")}}


async def chat(client: httpx.AsyncClient) -> tuple[float, float, int]:
    body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    started = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        await r.aread()
        return started, time.monotonic(), r.status_code


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="switch-bench-"))
    (tmp / "profiles.yaml").write_text(yaml.safe_dump(profiles(args.load_delay_s)))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "POSTGRES_"))},
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/gw.db",
        "JWT_SECRET": "b" * 48,
        "BCRYPT_ROUNDS": "4",
        "REDIS_URL": "",
        "RATE_LIMIT_ENABLED": "false",
        "TITLE_GENERATION": "false",
        "VLLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "MODEL_PROFILES_PATH": str(tmp / "profiles.yaml"),
        "MODEL_DEFAULT_PROFILE": "sim-a",
        "MODEL_LOG_DIR": str(tmp / "logs"),
        "GPU_PROBE": "none",
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=GATEWAY_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    r = await c.post(
                        "/api/auth/login", json={"username": "admin", "password": "admin123"}
                    )
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start")
                await asyncio.sleep(0.1)
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

            async def status() -> dict[str, Any]:
                body: dict[str, Any] = (await c.get("/api/models/status")).json()
                return body

            while (await status())["status"] != "running":
                await asyncio.sleep(0.05)

            samples: list[tuple[float, float, int]] = []
            stop = asyncio.Event()

            async def user() -> None:
                async with httpx.AsyncClient(
                    base_url=base, timeout=120, headers=dict(c.headers)
                ) as uc:
                    while not stop.is_set():
                        samples.append(await chat(uc))

            users = [asyncio.create_task(user()) for _ in range(args.concurrency)]
            await asyncio.sleep(1.0)
            windows: list[tuple[float, float]] = []
            for i in range(args.switches):
                target = "sim-b" if i % 2 == 0 else "sim-a"
                began = time.monotonic()
                r = await c.post("/api/models/switch", json={"profile_id": target})
                assert r.status_code == 202, r.text
                while True:
                    s = await status()
                    if s["switch"]["finished_at"] and s["status"] != "switching":
                        break
                    await asyncio.sleep(0.02)
                windows.append((began, time.monotonic()))
                await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*users)
            history = (await status())["history"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

    durations = [h["duration_s"] for h in history]
    drains = [h["drain_s"] for h in history]
    outcomes = {h["outcome"] for h in history}

    def overlaps(start: float, end: float) -> bool:
        return any(start < w_end and end > w_start for w_start, w_end in windows)

    during = [end - start for start, end, code in samples if overlaps(start, end)]
    outside = [end - start for start, end, code in samples if not overlaps(start, end)]
    errors = sum(1 for *_, code in samples if code != 200)
    print(
        f"switches: {len(history)} ({', '.join(sorted(outcomes))}), simulated load time "
        f"{args.load_delay_s:g}s, {args.concurrency} users streaming"
    )
    print(
        f"switch duration s: p50 {statistics.median(durations):.3f}  max {max(durations):.3f}"
        f"  (drain p50 {statistics.median(drains):.3f})"
    )
    print(
        f"chat latency s, not during a switch: p50 {statistics.median(outside):.3f}"
        f"  max {max(outside):.3f}  (n={len(outside)})"
    )
    if during:
        print(
            f"chat latency s, overlapping a switch: p50 {statistics.median(during):.3f}"
            f"  max {max(during):.3f}  (n={len(during)})"
        )
    print(f"requests: {len(samples)}, not 200: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--load-delay-s", type=float, default=0.0, help="simulated model load")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
