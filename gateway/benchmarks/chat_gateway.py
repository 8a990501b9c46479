"""Chat proxy benchmark (issue 3's figures), gateway versus the simulator alone, interleaved.

    cd gateway && .venv/bin/python -m benchmarks.chat_gateway [--rounds 3] [--seconds 5]
        [--db postgres|sqlite] [--skip-streams] [--concurrency 32 128]
        [--baseline /path/to/other-checkout/gateway]

It starts the simulator (zero delays, 16-token answers), then the gateway with ONE uvicorn worker,
JWT auth and usage recording on, and drives both with `simulator.bench` in a separate process
(keep-alive aiohttp client; time to first chunk = first `data:` line). Rounds alternate direct and
gateway runs so the machine's noise hits both. `--baseline` adds a gateway from another checkout
(same virtualenv, its own database) to every round, to compare two versions in one run. Then:
`/api/chat` with conversation persistence,
and 1,000 concurrent open streams (simulator at 50 ms between tokens) with the gateway's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import asyncpg
import httpx

from tests.ports import free_port

GATEWAY_DIR = Path(__file__).resolve().parents[1]
PY = sys.executable
LINE = re.compile(r"(\w+)=([\d.]+|nan)(ms)?")


def wait_http(url: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, cwd: Path | str = GATEWAY_DIR
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def simulator(tmp: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    with process(
        [PY, "-m", "simulator", "--port", str(port), *extra],
        dict(os.environ),
        tmp / f"sim-{port}.log",
    ):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"gw_bench_{uuid.uuid4().hex[:8]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def gateway(
    tmp: Path,
    upstream: str,
    database_url: str,
    cwd: Path | str = GATEWAY_DIR,
    workers: int = 1,
    prefix: tuple[str, ...] = (),
    **env_extra: str,
) -> Iterator[tuple[str, int]]:
    """A gateway (one worker unless told); `cwd` may be another checkout's `gateway/` (same
    virtualenv); `prefix` goes before the command (e.g. `taskset -c 1`)."""
    port = free_port()
    env = (
        dict(os.environ)
        | {
            "DATABASE_URL": database_url,
            "VLLM_BASE_URL": f"{upstream}/v1",
            "JWT_SECRET": "bench-" + "s" * 40,
            "BCRYPT_ROUNDS": "4",
            "TITLE_GENERATION": "false",
            "LOG_LEVEL": "INFO",
            "DB_POOL_SIZE": "20",
            # the limiter is on (its cost is part of the figures) but set never to refuse
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
            "RATE_LIMIT_CONCURRENT_STREAMS": "100000",
        }
        | env_extra
    )
    with process(
        [*prefix, PY, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env,
        tmp / f"gw-{port}.log",
        cwd,
    ) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live")
        yield url, proc.pid


@contextmanager
def bare_passthrough(tmp: Path, upstream: str) -> Iterator[str]:
    port = free_port()
    args = [PY, "-m", "uvicorn", "benchmarks.bare_passthrough:app", "--port", str(port)]
    args += ["--no-access-log", "--log-level", "warning"]
    with process(args, dict(os.environ) | {"UPSTREAM": upstream}, tmp / f"bare-{port}.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/docs")
        yield url


def token(url: str) -> str:
    r = httpx.post(
        f"{url}/api/auth/login", json={"username": "test", "password": "test"}, timeout=10
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def load(
    url: str,
    concurrency: int,
    seconds: float,
    *,
    tok: str | None = None,
    path: str = "/v1/chat/completions",
) -> dict[str, float]:
    args = [
        PY,
        "-m",
        "simulator.bench",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
        "--warmup",
        "1",
        "--model",
        "simulator-model",
        "--path",
        path,
    ]
    if tok:
        args += ["--token", tok]
    out = subprocess.run(args, cwd=GATEWAY_DIR, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("concurrency="))
    return {k: float(v) for k, v, _ in LINE.findall(line)}


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    return rss, peak


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat_gateway")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--skip-streams", action="store_true", help="skip the 1,000-stream run")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32, 128], help="levels to measure"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout's gateway/ directory (e.g. a `git worktree` of an older commit): "
        "its gateway runs interleaved with this one, same upstream and load generator",
    )
    parser.add_argument("--skip-ui", action="store_true", help="skip the /api/chat and streams")
    parser.add_argument(
        "--limiter-only", action="store_true", help="only the rate limiter on/off comparison"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    print(f"logs in {tmp}", flush=True)

    def db() -> AbstractContextManager[str]:
        if args.db == "postgres":
            return postgres_database()
        return _sqlite(tmp)

    if args.limiter_only:
        return limiter_comparison(tmp, args.rounds, args.seconds, db)
    with (
        simulator(tmp) as sim,
        db() as database_url,
        gateway(tmp, sim, database_url) as (gw, _pid),
        bare_passthrough(tmp, sim) as bare,
        contextlib.ExitStack() as stack,
    ):
        tok = token(gw)
        base: tuple[str, str] | None = None
        if args.baseline is not None:
            base_db = stack.enter_context(db())
            base_url, _ = stack.enter_context(gateway(tmp, sim, base_db, cwd=args.baseline))
            base = (base_url, token(base_url))
        print(f"\n== /v1/chat/completions, 16-chunk streams, zero upstream delay, db={args.db} ==")
        for concurrency in args.concurrency:
            direct, through, floor, old = [], [], [], []
            for _ in range(args.rounds):
                direct.append(load(sim, concurrency, args.seconds))
                through.append(load(gw, concurrency, args.seconds, tok=tok))
                floor.append(load(bare, concurrency, args.seconds))
                if base is not None:
                    old.append(load(base[0], concurrency, args.seconds, tok=base[1]))
            d_rps = statistics.median(r["rps"] for r in direct)
            g_rps = statistics.median(r["rps"] for r in through)
            b_rps = statistics.median(r["rps"] for r in floor)
            errors = sum(r["errors"] for r in through)
            baseline = ""
            if old:
                o_rps = statistics.median(r["rps"] for r in old)
                o_err = sum(r["errors"] for r in old)
                baseline = (
                    f" | baseline {o_rps:5.0f} rps errors={o_err:.0f} "
                    f"baseline/bare {o_rps / b_rps:.2f}"
                )
            print(
                f"c={concurrency:<4} direct {d_rps:6.0f} rps | gateway {g_rps:5.0f} rps "
                f"errors={errors:.0f} | bare FastAPI+aiohttp passthrough {b_rps:5.0f} rps "
                f"| gateway/bare {g_rps / b_rps:.2f}{baseline}"
            )
            if concurrency == 1:
                for q in ("p50", "p99"):
                    d_ttft = statistics.median(d[f"ttft_{q}"] for d in direct)
                    added = _added(direct, through, f"ttft_{q}")
                    floor_added = _added(direct, floor, f"ttft_{q}")
                    print(
                        f"       ttft {q}: direct {d_ttft:.2f} ms; added by the gateway "
                        f"{added:.2f} ms, by the bare passthrough {floor_added:.2f} ms"
                    )
        if args.skip_ui:
            return 0

        print("\n== /api/chat with conversation persistence (a new conversation per request) ==")
        chat = [load(gw, 32, args.seconds, tok=tok, path="/api/chat") for _ in range(args.rounds)]
        rps = statistics.median(r["rps"] for r in chat)
        ttft = statistics.median(r["ttft_p50"] for r in chat)
        errors = sum(r["errors"] for r in chat)
        print(f"c=32   /api/chat {rps:6.0f} rps errors={errors:.0f} ttft_p50={ttft:.2f} ms")

    if not args.skip_streams:
        print("\n== 1,000 concurrent streams, simulator 50 ms between tokens ==")
        with (
            simulator(tmp, "--itl-ms", "50", "--tokens", "100") as sim,
            db() as database_url,
            gateway(tmp, sim, database_url, UPSTREAM_MAX_CONNECTIONS="1200", DB_POOL_SIZE="20") as (
                gw,
                pid,
            ),
        ):
            tok = token(gw)
            peak = [0.0]
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(pid)[0])
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            result = load(gw, 1000, 12, tok=tok)
            stop.set()
            watcher.join()
            ok, errors, p50 = result["ok"], result["errors"], result["latency_p50"]
            print(
                f"c=1000 ok={ok:.0f} errors={errors:.0f} latency_p50={p50:.0f} ms "
                f"(ideal 5000) gateway peak_rss={peak[0]:.0f} MB"
            )
    return 0


def limiter_comparison(
    tmp: Path, rounds: int, seconds: float, db: Callable[[], AbstractContextManager[str]]
) -> int:
    """Issue 4: the same /v1 load with the rate limiter off, on in memory, and on Redis."""
    huge = {
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
        "RATE_LIMIT_CONCURRENT_STREAMS": "100000",
    }
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    variants = {
        "off": {"RATE_LIMIT_ENABLED": "false"},
        "memory": huge,
        "redis": huge | {"REDIS_URL": "redis://127.0.0.1:6379/0", "RATE_LIMIT_KEY_PREFIX": prefix},
    }
    print("\n== rate limiter: off / in memory / Redis (requests/minute + stream slots checked) ==")
    with simulator(tmp) as sim, db() as database_url, contextlib.ExitStack() as stack:
        urls = {}
        for name, extra in variants.items():
            url, _ = stack.enter_context(
                gateway(tmp, sim, database_url, GATEWAY_DIR, 1, (), **extra)
            )
            urls[name] = (url, token(url))
        for concurrency in (32, 128):
            results: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(rounds):
                for name, (url, tok) in urls.items():
                    results[name].append(load(url, concurrency, seconds, tok=tok)["rps"])
            off = statistics.median(results["off"])
            line = " | ".join(
                f"{name} {statistics.median(v):5.0f} rps ({statistics.median(v) / off:.2f})"
                for name, v in results.items()
            )
            print(f"c={concurrency:<4} {line}")
    return 0


def _added(direct: list[dict[str, float]], other: list[dict[str, float]], key: str) -> float:
    """Median over rounds of (other - direct): each round's pair ran back to back."""
    return statistics.median(o[key] - d[key] for d, o in zip(direct, other, strict=True))


@contextmanager
def _sqlite(tmp: Path) -> Iterator[str]:
    yield f"sqlite+aiosqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"


if __name__ == "__main__":
    sys.exit(main())
