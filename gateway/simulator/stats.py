"""Counters, the request history, and their Prometheus rendering."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

HISTORY_SIZE = 100


class Stats:
    """Counters of chat completion requests (other endpoints are not counted)."""

    __slots__ = (
        "aborted_total",
        "active_requests",
        "active_streams",
        "completed_total",
        "dropped_total",
        "failed_total",
        "finished_length",
        "finished_stop",
        "generation_tokens_total",
        "history",
        "prompt_tokens_total",
        "requests_total",
        "started_at",
    )

    def __init__(self) -> None:
        self.history: deque[tuple[float, str | None, Any]] = deque(maxlen=HISTORY_SIZE)
        self.active_requests = 0
        self.active_streams = 0
        self.started_at = time.time()
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
        self.history.clear()

    def record(self, body: Any, request_id: str | None) -> None:
        self.requests_total += 1
        self.history.append((time.time(), request_id, body))

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
            {"received_at": at, "request_id": rid, "body": body} for at, rid, body in self.history
        ]

    def prometheus(self, model: str) -> bytes:
        label = '{model_name="' + model.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        fin = '{finished_reason="%s",model_name="' + model.replace('"', '\\"') + '"}'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{label} {self.active_requests}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{label} 0",
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
