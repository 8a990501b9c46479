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

`--quality` asks instead the 20 questions of `local_model_questions.yaml` (10 English, 10 Korean,
graded by regular expressions) one after another, each with a fixed seed, and reports the correct
answers and the decode speed (tokens/s over all answers):

    .venv/bin/python -m benchmarks.local_model --quality [--model FILE.gguf] [--label NAME]
        [--settings profile|engine] [--runs 3] [--max-tokens 128]

`--settings profile` (default) starts the launcher with the sampling flags of the `local-cpu`
profile's command and sends its `sampling` fields as the gateway does; `engine` sends only
`max_tokens` and keeps llama.cpp's own defaults (the settings before issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.local_model.launcher import default_threads
from tests.ports import free_port

GATEWAY_DIR = Path(__file__).resolve().parents[1]
QUESTIONS = Path(__file__).with_name("local_model_questions.yaml")
PROFILES = GATEWAY_DIR / "profiles" / "profiles.yaml"
LOCAL_PROFILE = "local-cpu"
ALIAS = "bench"
HANGUL = re.compile("[\uac00-\ud7a3]")
# launcher flags that set the engine's sampling defaults (copied from the profile's command)
SAMPLING_FLAGS = ("--temperature", "--top-p", "--top-k", "--min-p", "--repeat-penalty")
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


def start_launcher(
    port: int, args: argparse.Namespace, log: Path, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    model = ["--model", str(args.model)] if getattr(args, "model", None) else []
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
        *model,
        *extra,
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


# --- --quality: the 20 questions ------------------------------------------------------------------
@dataclass
class Question:
    id: str
    lang: str
    prompt: str
    expect: list[str]
    hangul: bool

    def grade(self, answer: str) -> bool:
        if self.lang == "ko" and self.hangul and not HANGUL.search(answer):
            return False  # a Korean question wants a Korean answer
        return any(re.search(p, answer, re.IGNORECASE) for p in self.expect)


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["questions"]
    return [
        Question(
            id=q["id"],
            lang=q["lang"],
            prompt=q["prompt"],
            expect=list(q["expect"]),
            hangul=bool(q.get("hangul", True)),
        )
        for q in raw
    ]


def profile_settings() -> tuple[list[str], dict[str, Any]]:
    """The local-cpu profile's engine sampling flags (from its command) and `sampling` fields."""
    profile = yaml.safe_load(PROFILES.read_text())["profiles"][LOCAL_PROFILE]
    command: list[str] = profile["command"]
    flags: list[str] = []
    for i, word in enumerate(command[:-1]):
        if word in SAMPLING_FLAGS:
            flags += [word, command[i + 1]]
    return flags, dict(profile.get("sampling") or {})


@dataclass
class Answer:
    id: str
    correct: bool
    text: str
    completion_tokens: int
    decode_s: float


async def ask(
    client: httpx.AsyncClient, question: Question, fields: dict[str, Any], seed: int, system: str
) -> Answer:
    system_message = [{"role": "system", "content": system}] if system else []
    body: dict[str, Any] = {
        "model": ALIAS,
        "messages": [*system_message, {"role": "user", "content": question.prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": seed,
        **fields,
    }
    text, first, last = "", 0.0, 0.0
    usage: dict[str, Any] = {}
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Connection": "close"}
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    last = time.perf_counter()
                    first = first or last
                    text += piece
    return Answer(
        id=question.id,
        correct=question.grade(text),
        text=text,
        completion_tokens=int(usage.get("completion_tokens", 0)),
        decode_s=last - first,
    )


def quality(args: argparse.Namespace) -> dict[str, Any]:
    questions = load_questions()
    flags, sampling = profile_settings() if args.settings == "profile" else ([], {})
    fields = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "top_k")}
    if "repetition_penalty" in sampling:  # vLLM's name; llama.cpp calls it repeat_penalty
        fields["repeat_penalty"] = sampling["repetition_penalty"]
    fields["max_tokens"] = args.max_tokens or sampling.get("max_tokens") or 128
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="local_model_quality_", suffix=".log")[1])
    started = time.perf_counter()
    process = start_launcher(port, args, log, flags)

    async def run_all() -> list[Answer]:
        answers = []
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            for run in range(args.runs):
                for i, question in enumerate(questions):
                    seed = 1000 * run + i
                    answers.append(await ask(client, question, fields, seed, args.system_prompt))
        return answers

    try:
        wait_ready(base, process, log, 300.0)
        ready_s = time.perf_counter() - started
        answers = asyncio.run(run_all())
    finally:
        stop_launcher(process)
    log.unlink(missing_ok=True)
    asked = questions * args.runs
    by_lang = {
        lang: sum(a.correct for a, q in zip(answers, asked, strict=True) if q.lang == lang)
        for lang in ("en", "ko")
    }
    decoded = [a for a in answers if a.completion_tokens > 1 and a.decode_s > 0]
    return {
        "label": args.label or (args.model.name if args.model else "default model"),
        "settings": args.settings,
        "engine_flags": flags,
        "request_fields": fields,
        "system_prompt": args.system_prompt,
        "runs": args.runs,
        "correct": by_lang["en"] + by_lang["ko"],
        "correct_en": by_lang["en"],
        "correct_ko": by_lang["ko"],
        "out_of": len(questions) * args.runs,
        "tok_s": round(
            sum(a.completion_tokens - 1 for a in decoded) / sum(a.decode_s for a in decoded), 1
        )
        if decoded
        else 0.0,
        "mean_completion_tokens": round(statistics.mean(a.completion_tokens for a in answers), 1),
        "ready_s": round(ready_s, 2),
        "threads": args.threads,
        "answers": [asdict(a) for a in answers],
    }


def print_quality(report: dict[str, Any], verbose: bool) -> None:
    if verbose:
        for a in report["answers"]:
            mark = "ok " if a["correct"] else "BAD"
            print(f"{mark} {a['id']:<20} {a['text'].strip()[:110]!r}")
    runs = report["runs"]
    print(
        f"{report['label']} [{report['settings']}] correct {report['correct']}/{report['out_of']}"
        f" (en {report['correct_en']}/{10 * runs}, ko {report['correct_ko']}/{10 * runs}),"
        f" {report['tok_s']} tokens/s, {report['mean_completion_tokens']} tokens per answer,"
        f" ready in {report['ready_s']} s, {report['threads']} threads"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_model")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--parallel", type=int, default=4, help="parallel streams (and slots)")
    parser.add_argument("--requests", type=int, default=7, help="requests for the TTFT p50")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--quality", action="store_true", help="ask the 20 graded questions")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the wheel's)")
    parser.add_argument("--label", default="", help="--quality: the candidate's name")
    parser.add_argument("--settings", choices=("profile", "engine"), default="profile")
    parser.add_argument("--runs", type=int, default=1, help="--quality: rounds of 20 (seeds)")
    parser.add_argument("--verbose", action="store_true", help="--quality: print every answer")
    parser.add_argument("--system-prompt", default="", help="--quality: sent before each question")
    args = parser.parse_args()
    if args.quality:
        if args.max_tokens == parser.get_default("max_tokens"):
            args.max_tokens = 0  # the profile's max_tokens (or 128)
        report = quality(args)
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
        else:
            print_quality(report, args.verbose)
        return 0
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
