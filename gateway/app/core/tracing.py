"""OpenTelemetry tracing, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (issue 16).

On: FastAPI's instrumentation opens a server span per request (continuing an incoming
`traceparent`), the request id becomes its `request_id` attribute, and every request to the
model server carries the span's `traceparent` (vLLM continues the trace when it runs with
`--otlp-traces-endpoint`). Spans go by OTLP/HTTP (protobuf) to `{endpoint}/v1/traces` in
batches. Off: nothing of the SDK is imported and the hot path pays two `is None` checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.core.config import Settings

log = structlog.get_logger()

# set while tracing is on; the request middleware and the upstream client call them
on_request_id: Callable[[str], None] | None = None
inject_headers: Callable[[dict[str, str]], None] | None = None

EXCLUDED_URLS = "/health,/metrics"  # probes and scrapes are not worth a trace each


def traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; traces go to /v1/traces."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def setup_tracing(app: FastAPI, settings: Settings) -> Any | None:
    """Instrument `app` when an endpoint is configured; returns the tracer provider (or None)."""
    global on_request_id, inject_headers
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return None
    from opentelemetry import propagate, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from app import __version__

    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": settings.otel_service_name,
                "service.version": __version__,
                "deployment.environment": settings.environment.value,
            }
        )
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=10))
    )
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        # no span per ASGI message: a streamed answer would export one per SSE chunk
        exclude_spans=["receive", "send"],
    )

    def tag_request_id(request_id: str) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("request_id", request_id)

    on_request_id = tag_request_id
    inject_headers = propagate.inject
    log.info("tracing on", endpoint=traces_url(endpoint), service=settings.otel_service_name)
    return provider


def shutdown_tracing(provider: Any | None) -> None:
    """Flush the spans still batched and stop the exporter (blocking: run it in a thread)."""
    global on_request_id, inject_headers
    if provider is None:
        return
    on_request_id = None
    inject_headers = None
    provider.shutdown()
