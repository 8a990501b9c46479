"""Load the simulator (or anything OpenAI-compatible) with streaming chat requests.

    python -m simulator.bench --url http://127.0.0.1:8000 --concurrency 32 --seconds 5
    python -m simulator.bench --spawn --concurrency 128     # starts its own simulator

A request counts as done once ``data: [DONE]`` has arrived; TTFT is the time to the first
``data:`` line. Keep-alive connections, one aiohttp session, uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from simulator.__main__ import loop_factory

_DONE = b"data: [DONE]\n\n"


@dataclass
class Results:
    ok: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process (with its threads) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HEADERS = {"content-type": "application/json"}


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, results: Results) -> None:
    started = time.perf_counter()
    first: float | None = None
    tail = b""
    headers = HEADERS
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            results.errors += 1
            results.error_kinds[f"status {response.status}"] += 1
            return
        async for chunk in response.content.iter_any():
            if first is None and b"data:" in chunk:
                first = time.perf_counter() - started
            tail = (tail + chunk[-len(_DONE) :])[-len(_DONE) :]
    if tail == _DONE and first is not None:
        results.ok += 1
        results.ttft.append(first)
        results.latency.append(time.perf_counter() - started)
    else:
        results.errors += 1
        results.error_kinds["no [DONE]"] += 1


async def _worker(
    session: aiohttp.ClientSession, url: str, body: bytes, until: float, results: Results
) -> None:
    while time.perf_counter() < until:
        try:
            await _one(session, url, body, results)
        except (TimeoutError, aiohttp.ClientError) as exc:
            results.errors += 1
            results.error_kinds[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1


async def run(
    url: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    body: bytes,
    path: str = "/v1/chat/completions",
    cpu_pids: tuple[int, ...] = (),
) -> Results:
    endpoint = url.rstrip("/") + path
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup > 0:
            until = time.perf_counter() + warmup
            scratch = Results()
            await asyncio.gather(
                *(_worker(session, endpoint, body, until, scratch) for _ in range(concurrency))
            )
        results = Results()
        cpu_before = sum(process_cpu_s(pid) for pid in cpu_pids)
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(
            *(_worker(session, endpoint, body, until, results) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - started
        cpu_used = sum(process_cpu_s(pid) for pid in cpu_pids) - cpu_before
    rps = results.ok / elapsed
    cpu = ""
    if cpu_pids:  # requests still running at the end make this a little high: the same for all
        cpu = f" cpu_ms_per_req={cpu_used * 1000 / max(results.ok, 1):.3f}ms"
    print(
        f"concurrency={concurrency} seconds={elapsed:.2f} ok={results.ok} errors={results.errors} "
        f"rps={rps:.0f} ttft_p50={_percentile(results.ttft, 0.5) * 1000:.2f}ms "
        f"ttft_p99={_percentile(results.ttft, 0.99) * 1000:.2f}ms "
        f"latency_p50={_percentile(results.latency, 0.5) * 1000:.2f}ms "
        f"latency_p99={_percentile(results.latency, 0.99) * 1000:.2f}ms{cpu}",
        flush=True,
    )
    if results.error_kinds:
        print(f"errors by kind: {dict(results.error_kinds)}", flush=True)
    return results


@contextlib.contextmanager
def spawned_simulator(extra: list[str]) -> Iterator[str]:
    """Start ``python -m simulator`` on a free port; yield its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cwd = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "simulator", "--port", str(port), *extra]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, env=os.environ.copy())  # noqa: S603
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if "listening" not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.bench")
    parser.add_argument("--url", default=None, help="base URL (default: spawn a simulator)")
    parser.add_argument("--spawn", action="store_true", help="start a simulator to measure")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompt", default="Say something short.")
    parser.add_argument("--no-usage", action="store_true", help="no stream_options")
    parser.add_argument("--path", default="/v1/chat/completions", help="e.g. /api/chat")
    parser.add_argument("--token", default=None, help="sent as Authorization: Bearer TOKEN")
    parser.add_argument(
        "--cpu-pid",
        type=int,
        action="append",
        default=[],
        help="a server process (repeatable): report its CPU per request from /proc",
    )
    parser.add_argument(
        "--sim-args", default="", help='options for a spawned simulator, e.g. "--itl-ms 5"'
    )
    args = parser.parse_args(argv)
    payload: dict[str, object] = {
        "messages": [{"role": "user", "content": args.prompt}],
        "stream": True,
    }
    if not args.no_usage:
        payload["stream_options"] = {"include_usage": True}
    if args.model:
        payload["model"] = args.model
    if args.max_tokens:
        payload["max_tokens"] = args.max_tokens
    body = orjson.dumps(payload)
    if args.token:
        HEADERS["authorization"] = f"Bearer {args.token}"

    def go(url: str) -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(
                run(
                    url,
                    args.concurrency,
                    args.seconds,
                    args.warmup,
                    body,
                    args.path,
                    tuple(args.cpu_pid),
                )
            )

    if args.url and not args.spawn:
        go(args.url)
    else:
        with spawned_simulator(shlex.split(args.sim_args)) as url:
            go(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
