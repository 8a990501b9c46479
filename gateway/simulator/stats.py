"""Counters, the request history, and their Prometheus rendering.

`/metrics` carries vLLM's own series under their real names (vLLM v1's `PrometheusStatLogger`,
as of the pinned v0.30.x: labels `model_name` and `engine`), with values that move with the
load: requests past `max_num_seqs` are reported waiting, the KV cache fills with the tokens of
the requests in flight, a prompt that repeats the messages of an earlier one hits the prefix
cache, and TTFT / end-to-end latency are observed into vLLM's buckets. The simulator's own
counters follow as `simulator_*`.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from typing import Any

import orjson

HISTORY_SIZE = 100
PREFIX_CACHE_ENTRIES = 20_000
# vLLM's buckets (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class Histogram:
    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                break

    def lines(self, name: str, labels: str) -> list[str]:
        inner = labels[1:-1]
        out = []
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            out.append(f'{name}_bucket{{{inner},le="{bound!r}"}} {running}')
        out.append(f'{name}_bucket{{{inner},le="+Inf"}} {self.count}')
        out.append(f"{name}_count{labels} {self.count}")
        out.append(f"{name}_sum{labels} {self.total!r}")
        return out


class Stats:
    """Counters of chat completion requests (other endpoints are not counted)."""

    __slots__ = (
        "aborted_total",
        "active_requests",
        "active_streams",
        "completed_total",
        "dropped_total",
        "e2e_latency",
        "failed_total",
        "finished_length",
        "finished_stop",
        "generation_tokens_total",
        "history",
        "kv_cache_tokens",
        "kv_tokens_in_use",
        "max_num_seqs",
        "prefix_cache_hits",
        "prefix_cache_queries",
        "prefix_seen",
        "prompt_tokens_total",
        "requests_total",
        "started_at",
        "ttft",
    )

    def __init__(self, max_num_seqs: int = 256, kv_cache_tokens: int = 65536) -> None:
        self.history: deque[tuple[float, str | None, Any, str | None]] = deque(maxlen=HISTORY_SIZE)
        self.active_requests = 0
        self.active_streams = 0
        self.kv_tokens_in_use = 0
        self.max_num_seqs = max_num_seqs
        self.kv_cache_tokens = kv_cache_tokens
        self.started_at = time.time()
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e_latency = Histogram(LATENCY_BUCKETS)
        self.prefix_seen: OrderedDict[bytes, None] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Zero the counters and the history; requests in flight stay counted as active."""
        self.requests_total = 0
        self.completed_total = 0
        self.aborted_total = 0
        self.failed_total = 0
        self.dropped_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.finished_stop = 0
        self.finished_length = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.prefix_seen.clear()
        self.ttft.reset()
        self.e2e_latency.reset()
        self.history.clear()

    def prefix_lookup(self, messages: Any, prompt_tokens: int) -> None:
        """Count a prompt against the prefix cache: the leading messages that an earlier prompt
        already had are hits (a conversation re-sends its history each turn), like vLLM's block
        hashes of the prompt's prefix."""
        self.prefix_cache_queries += prompt_tokens
        if not isinstance(messages, list):
            return
        digest = hashlib.blake2b(digest_size=16)
        cached = 0
        cached_bytes = total_bytes = 0
        seen = self.prefix_seen
        for index, message in enumerate(messages):
            encoded = orjson.dumps(message)
            total_bytes += len(encoded)
            digest.update(encoded)
            key = digest.digest()
            if key in seen and cached == index:
                seen.move_to_end(key)
                cached = index + 1
                cached_bytes = total_bytes
            else:
                seen[key] = None
        while len(seen) > PREFIX_CACHE_ENTRIES:
            seen.popitem(last=False)
        if cached:
            # the prompt's tokens in proportion to the cached messages' size (no second
            # tokenizer pass); the last token is always computed again, as in vLLM
            share = prompt_tokens * cached_bytes // max(total_bytes, 1)
            self.prefix_cache_hits += min(share, prompt_tokens - 1)

    def record(self, body: Any, request_id: str | None, traceparent: str | None = None) -> None:
        self.requests_total += 1
        self.history.append((time.time(), request_id, body, traceparent))

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "active_requests": self.active_requests,
            "active_streams": self.active_streams,
            "completed_total": self.completed_total,
            "aborted_total": self.aborted_total,
            "failed_total": self.failed_total,
            "dropped_total": self.dropped_total,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "last_request": self.history[-1][2] if self.history else None,
        }

    def requests(self) -> list[dict[str, Any]]:
        return [
            {"received_at": at, "request_id": rid, "body": body, "traceparent": parent}
            for at, rid, body, parent in self.history
        ]

    def prometheus(self, model: str) -> bytes:
        escaped = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        label = '{engine="0",model_name="' + escaped + '"}'
        fin = '{engine="0",finished_reason="%s",model_name="' + escaped + '"}'
        running = min(self.active_requests, self.max_num_seqs)
        waiting = self.active_requests - running
        kv_usage = min(1.0, self.kv_tokens_in_use / self.kv_cache_tokens)
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{label} {running}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{label} {waiting}",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{label} {kv_usage!r}",
            "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of "
            "queried tokens.",
            "# TYPE vllm:prefix_cache_queries_total counter",
            f"vllm:prefix_cache_queries_total{label} {self.prefix_cache_queries}",
            "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached "
            "tokens.",
            "# TYPE vllm:prefix_cache_hits_total counter",
            f"vllm:prefix_cache_hits_total{label} {self.prefix_cache_hits}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{label} {self.prompt_tokens_total}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{label} {self.generation_tokens_total}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            f"vllm:request_success_total{fin % 'stop'} {self.finished_stop}",
            f"vllm:request_success_total{fin % 'length'} {self.finished_length}",
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            *self.ttft.lines("vllm:time_to_first_token_seconds", label),
            "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
            *self.e2e_latency.lines("vllm:e2e_request_latency_seconds", label),
        ]
        own = (
            ("requests_total", "counter", "Chat completion requests received."),
            ("active_streams", "gauge", "Streaming responses in progress."),
            ("active_requests", "gauge", "Chat completion requests in progress."),
            ("completed_total", "counter", "Requests answered in full."),
            ("aborted_total", "counter", "Requests whose client went away first."),
            ("failed_total", "counter", "Requests answered with an error status."),
            ("dropped_total", "counter", "Connections dropped on purpose (drop_after)."),
        )
        for name, kind, help_text in own:
            lines.append(f"# HELP simulator_{name} {help_text}")
            lines.append(f"# TYPE simulator_{name} {kind}")
            lines.append(f"simulator_{name} {getattr(self, name)}")
        return ("\n".join(lines) + "\n").encode()
