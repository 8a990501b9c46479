"""The local CPU model's figures: starts `python -m app.local_model` and measures

- time to ready: process start → `/health` 200 (Python start-up and model load included);
- first-token latency: request sent → first non-empty content delta, p50 over sequential
  requests with distinct prompts (no prompt-cache hit);
- tokens/s for one stream: generated tokens after the first / time between first and last token;
- aggregate tokens/s with N parallel streams: all generated tokens / wall time of the batch.

Generation uses `ignore_eos` so every stream produces exactly `--max-tokens` tokens. Streamed
requests carry `Connection: close`: llama.cpp closes the connection after every streamed answer
while advertising keep-alive, so a pooled connection would fail the next request at random.

    cd gateway && .venv/bin/python -m benchmarks.local_model [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.ports import free_port

GATEWAY_DIR = Path(__file__).resolve().parents[1]
ALIAS = "bench"
TOPICS = [
    "the ocean",
    "a mountain village",
    "the history of bread",
    "how bicycles work",
    "a rainy afternoon",
    "the moon",
    "a lighthouse keeper",
    "learning to swim",
    "a busy market",
    "winter birds",
]


@dataclass
class StreamResult:
    ttft_s: float
    decode_s: float  # first content token → last content token
    wall_s: float
    completion_tokens: int
    prompt_tokens: int


@dataclass
class Figures:
    ready_s: float
    ttft_p50_ms: float
    ttft_samples_ms: list[float]
    single_stream_tok_s: float
    parallel_streams: int
    parallel_aggregate_tok_s: float
    parallel_per_stream_tok_s: float
    max_tokens: int
    threads: int
    exit_code: int


def start_launcher(port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "app.local_model",
        "--port",
        str(port),
        "--alias",
        ALIAS,
        "--n-parallel",
        str(args.parallel),
        "--threads",
        str(args.threads),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=GATEWAY_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop_launcher(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=base, timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the launcher exited ({process.returncode}):\n{log.read_text()}")
            try:
                if client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready within {deadline_s} s:\n{log.read_text()}")
            time.sleep(0.02)


async def one_stream(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> StreamResult:
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    usage: dict[str, Any] = {}
    headers = {"Connection": "close"}
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
    end = time.perf_counter()
    if not first or not usage:
        raise SystemExit(f"no content or no usage chunk for {prompt!r}")
    return StreamResult(
        ttft_s=first - started,
        decode_s=last - first,
        wall_s=end - started,
        completion_tokens=int(usage["completion_tokens"]),
        prompt_tokens=int(usage["prompt_tokens"]),
    )


async def generate(base: str, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await one_stream(client, "Hello!", 8)  # warm-up, not counted
        ttfts = []
        for i in range(args.requests):
            prompt = f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}. ({i})"
            ttfts.append((await one_stream(client, prompt, 16)).ttft_s)
        single = await one_stream(client, "Tell me a long story about a dragon.", args.max_tokens)
        batch_started = time.perf_counter()
        results = await asyncio.gather(
            *(
                one_stream(
                    client, f"Tell me a story about {TOPICS[i % len(TOPICS)]}.", args.max_tokens
                )
                for i in range(args.parallel)
            )
        )
        batch_s = time.perf_counter() - batch_started
    return {"ttfts": ttfts, "single": single, "results": results, "batch_s": batch_s}


def measure(args: argparse.Namespace) -> Figures:
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="local_model_bench_", suffix=".log")[1])
    started = time.perf_counter()
    process = start_launcher(port, args, log)
    try:
        wait_ready(base, process, log, 120.0)
        ready_s = time.perf_counter() - started
        run = asyncio.run(generate(base, args))
    finally:
        exit_code = stop_launcher(process)
    log.unlink(missing_ok=True)
    ttfts: list[float] = run["ttfts"]
    single: StreamResult = run["single"]
    results: list[StreamResult] = run["results"]
    tokens = sum(r.completion_tokens for r in results)
    return Figures(
        ready_s=round(ready_s, 3),
        ttft_p50_ms=round(statistics.median(ttfts) * 1000, 1),
        ttft_samples_ms=[round(t * 1000, 1) for t in ttfts],
        single_stream_tok_s=round((single.completion_tokens - 1) / single.decode_s, 1),
        parallel_streams=args.parallel,
        parallel_aggregate_tok_s=round(tokens / run["batch_s"], 1),
        parallel_per_stream_tok_s=round(
            statistics.mean((r.completion_tokens - 1) / r.decode_s for r in results), 1
        ),
        max_tokens=args.max_tokens,
        threads=args.threads,
        exit_code=exit_code,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_model")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--parallel", type=int, default=4, help="parallel streams (and slots)")
    parser.add_argument("--requests", type=int, default=7, help="requests for the TTFT p50")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = parser.parse_args()
    figures = measure(args)
    if args.json:
        print(json.dumps(asdict(figures)))
    else:
        print(f"time to ready           {figures.ready_s:.2f} s (process start -> /health 200)")
        print(
            f"first token (p50 of {args.requests})  {figures.ttft_p50_ms:.0f} ms "
            f"(samples {figures.ttft_samples_ms})"
        )
        print(f"one stream              {figures.single_stream_tok_s:.1f} tokens/s")
        print(
            f"{figures.parallel_streams} parallel streams     "
            f"{figures.parallel_aggregate_tok_s:.1f} tokens/s aggregate "
            f"({figures.parallel_per_stream_tok_s:.1f} per stream)"
        )
        print(
            f"settings                {figures.threads} threads, {figures.max_tokens} tokens "
            f"per stream, launcher exit code {figures.exit_code}"
        )
    return 0 if figures.exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
