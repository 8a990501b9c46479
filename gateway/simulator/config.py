"""Command-line settings and the process-wide, runtime-adjustable defaults."""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.faults import FaultSpec, FaultSpecError, parse_spec

REASONING_FIELDS = ("", "reasoning", "reasoning_content")


@dataclass(frozen=True, slots=True)
class Settings:
    """What is fixed for the life of the process."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "simulator-model"
    max_model_len: int = 4096
    startup_delay_s: float = 0.0  # like vLLM loading weights: nothing listens until it ends
    # /metrics: requests past this many are reported waiting; the KV cache holds this many tokens
    max_num_seqs: int = 256
    kv_cache_tokens: int = 65536


@dataclass(slots=True)
class Runtime:
    """Defaults applied to every chat request; changed through ``POST /sim/config``."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens: int = 16
    fail_rate: float = 0.0
    fault: str = ""
    seed: int | None = None
    # a reasoning model: the chain of thought streams in this delta field ("reasoning", as vLLM
    # sends it today, or "reasoning_content", before v0.10); "" answers without thinking
    reasoning: str = ""
    embeddings: bool = True  # /v1/embeddings served (vLLM registers it for pooling models)
    fault_spec: FaultSpec = field(default_factory=FaultSpec)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - fault sampling, not crypto
        self.fault_spec = parse_spec(self.fault)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ttft_ms": self.ttft_ms,
            "itl_ms": self.itl_ms,
            "tokens": self.tokens,
            "fail_rate": self.fail_rate,
            "fault": self.fault,
            "seed": self.seed,
            "reasoning": self.reasoning,
            "embeddings": self.embeddings,
        }

    def copy(self) -> Runtime:
        return Runtime(
            ttft_ms=self.ttft_ms,
            itl_ms=self.itl_ms,
            tokens=self.tokens,
            fail_rate=self.fail_rate,
            fault=self.fault,
            seed=self.seed,
            reasoning=self.reasoning,
            embeddings=self.embeddings,
        )

    def update(self, changes: dict[str, Any]) -> None:
        """Validate all of ``changes`` first, then apply them; raises ``ValueError``."""
        unknown = sorted(set(changes) - set(self.as_dict()))
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
        new = self.as_dict()
        for key in ("ttft_ms", "itl_ms"):
            if key in changes:
                new[key] = _number(key, changes[key], low=0.0)
        if "fail_rate" in changes:
            new["fail_rate"] = _number("fail_rate", changes["fail_rate"], low=0.0, high=1.0)
        if "tokens" in changes:
            value = changes["tokens"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError("tokens must be an integer >= 1")
            new["tokens"] = value
        if "fault" in changes:
            value = changes["fault"]
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValueError("fault must be a string such as 'drop_after=3'")
            try:
                spec = parse_spec(value)
            except FaultSpecError as exc:
                raise ValueError(str(exc)) from exc
            new["fault"] = value
        else:
            spec = self.fault_spec
        if "seed" in changes:
            seed = changes["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ValueError("seed must be an integer or null")
        if "reasoning" in changes:
            if changes["reasoning"] not in REASONING_FIELDS:
                raise ValueError("reasoning must be one of '', 'reasoning', 'reasoning_content'")
            new["reasoning"] = changes["reasoning"]
        if "embeddings" in changes:
            if not isinstance(changes["embeddings"], bool):
                raise ValueError("embeddings must be a boolean")
            new["embeddings"] = changes["embeddings"]
        self.reasoning = new["reasoning"]
        self.embeddings = new["embeddings"]
        self.ttft_ms = new["ttft_ms"]
        self.itl_ms = new["itl_ms"]
        self.tokens = new["tokens"]
        self.fail_rate = new["fail_rate"]
        self.fault = new["fault"]
        self.fault_spec = spec
        if "seed" in changes:
            self.seed = changes["seed"]
            self.rng = random.Random(self.seed)  # noqa: S311


def _number(name: str, value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not low <= number <= high or math.isnan(number):
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return number


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _fault(text: str) -> str:
    try:
        parse_spec(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Runtime]:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="vLLM/OpenAI-compatible simulator for tests, benchmarks and load runs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--model", default="simulator-model", help="served model name")
    parser.add_argument("--max-model-len", type=_positive_int, default=4096)
    parser.add_argument("--ttft-ms", type=_non_negative, default=0.0, help="time to first token")
    parser.add_argument("--itl-ms", type=_non_negative, default=0.0, help="inter-token latency")
    parser.add_argument("--tokens", type=_positive_int, default=16, help="generic answer length")
    parser.add_argument("--fail-rate", type=_rate, default=0.0, help="share of requests → 500")
    parser.add_argument("--fault", type=_fault, default="", help="fault spec for every request")
    parser.add_argument("--seed", type=int, default=None, help="seed for --fail-rate")
    parser.add_argument(
        "--max-num-seqs",
        type=_positive_int,
        default=256,
        help="/metrics: requests beyond this many are reported waiting (vllm:num_requests_waiting)",
    )
    parser.add_argument(
        "--kv-cache-tokens",
        type=_positive_int,
        default=65536,
        help="/metrics: KV cache size in tokens (vllm:kv_cache_usage_perc)",
    )
    parser.add_argument(
        "--startup-delay-s", type=_non_negative, default=0.0, help="wait before listening"
    )
    parser.add_argument(
        "--reasoning-field",
        choices=[f for f in REASONING_FIELDS if f],
        default="",
        help="act as a reasoning model: think first, in this delta field",
    )
    parser.add_argument(
        "--no-embeddings", action="store_true", help="serve no /v1/embeddings (a chat model)"
    )
    args = parser.parse_args(argv)
    settings = Settings(
        host=args.host,
        port=args.port,
        model=args.model,
        max_model_len=args.max_model_len,
        startup_delay_s=args.startup_delay_s,
        max_num_seqs=args.max_num_seqs,
        kv_cache_tokens=args.kv_cache_tokens,
    )
    runtime = Runtime(
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        tokens=args.tokens,
        fail_rate=args.fail_rate,
        fault=args.fault,
        seed=args.seed,
        reasoning=args.reasoning_field,
        embeddings=not args.no_embeddings,
    )
    return settings, runtime
