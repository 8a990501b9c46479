"""Prometheus metrics (SPEC §3 "Health and metrics").

Metrics are module-level, as prometheus_client expects: one registry per process. With several
uvicorn workers, `app.cli serve` sets PROMETHEUS_MULTIPROC_DIR before any worker starts, values
live in per-process files there, and `/metrics` sums every worker's (gauges: live processes).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests by route template", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from request to the end of the response",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
CHAT_REQUESTS = Counter(
    "gateway_chat_requests_total", "Chat completions by outcome", ["model", "client", "status"]
)
CHAT_TTFT = Histogram(
    "gateway_chat_ttft_seconds",
    "Time to the first token of any kind (reasoning, answer or tool call)",
    ["model"],
    buckets=_TTFT_BUCKETS,
)
CHAT_ANSWER_TTFT = Histogram(
    "gateway_chat_answer_ttft_seconds",
    "Time to the first token of the answer itself (after any reasoning)",
    ["model"],
    buckets=_TTFT_BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens_total", "Tokens reported by the model server", ["model", "direction"]
)
ACTIVE_STREAMS = Gauge(
    "gateway_active_streams", "Chat answers being relayed now", multiprocess_mode="livesum"
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Model server failures", ["kind"])
RATE_LIMIT_REJECTIONS = Counter(
    "gateway_rate_limit_rejections_total", "Requests refused with 429", ["reason"]
)
for _reason in ("requests_per_minute", "streams", "tokens_per_day"):
    RATE_LIMIT_REJECTIONS.labels(_reason)  # from 0, so rate() sees the first refusal
RATE_LIMIT_STORE_ERRORS = Counter(
    "gateway_rate_limit_store_errors_total", "Rate-limit store (Redis) failures"
)
USAGE_QUEUE_DEPTH = Gauge(
    "gateway_usage_queue_depth", "Usage rows waiting to be written", multiprocess_mode="livesum"
)
USAGE_ROWS_DROPPED = Counter("gateway_usage_rows_dropped_total", "Usage rows lost (must stay 0)")
MODEL_SWITCHES = Counter("gateway_model_switches_total", "Model switches by outcome", ["outcome"])
for _outcome in ("success", "rolled_back", "failed"):
    # exported from 0, so increase() in Prometheus counts the first switch of each outcome too
    MODEL_SWITCHES.labels(_outcome)
MODEL_SWITCH_DURATION = Histogram(
    "gateway_model_switch_duration_seconds",
    "From the switch request to the new model answering (or the rollback ending)",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200),
)
MODEL_SERVER_RESTARTS = Counter(
    "gateway_model_server_restarts_total", "Unexpected model server exits restarted by the manager"
)
MODEL_UP = Gauge(
    "gateway_model_up", "1 while the managed model server answers", multiprocess_mode="max"
)
RETENTION_PURGED = Counter(
    "gateway_retention_purged_rows_total", "Rows deleted by the RETENTION_DAYS purge", ["table"]
)
RETENTION_LAST_RUN = Gauge(
    "gateway_retention_last_run_timestamp_seconds",
    "When the retention purge last finished (Unix time)",
    multiprocess_mode="max",
)
UPSTREAM_INSTANCE_UP = Gauge(
    "gateway_upstream_instance_up",
    "1 while a pool's model server instance takes requests, 0 while it is out",
    ["instance"],
    multiprocess_mode="livemin",
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total",
    "Requests sent once more to another instance of a pool after failing before their first byte",
)
UPSTREAM_INSTANCE_OUTSTANDING = Gauge(
    "gateway_upstream_instance_outstanding",
    "Requests a pool's model server instance is answering now",
    ["instance"],
    multiprocess_mode="livesum",
)
GPU_UTILIZATION = Gauge(
    "gpu_utilization_percent",
    "GPU utilization at the last probe",
    ["gpu"],
    multiprocess_mode="max",
)
GPU_MEMORY_USED = Gauge(
    "gpu_memory_used_bytes",
    "GPU memory in use at the last probe",
    ["gpu"],
    multiprocess_mode="max",
)
GPU_MEMORY_TOTAL = Gauge(
    "gpu_memory_total_bytes", "GPU memory size", ["gpu"], multiprocess_mode="max"
)

# --- observability pack (issue 16): what the alert rules in monitoring/ need -------------------
REDIS_UP = Gauge(
    "gateway_redis_up",
    "1 while the shared store answers PING (sampled every few seconds; only when REDIS_URL is set)",
    ["store"],
    multiprocess_mode="livemin",
)
USAGE_QUEUE_CAPACITY = Gauge(
    "gateway_usage_queue_capacity",
    "Usage rows the queue holds before rows are dropped (USAGE_QUEUE_MAX)",
    multiprocess_mode="livesum",
)


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker in multiprocess mode."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
