"""OpenTelemetry tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, a real gateway exports its
spans by OTLP/HTTP to a small receiver on 127.0.0.1 (the request id as an attribute) and the
model server (the simulator) receives the `traceparent` of that trace; without it, nothing of
the SDK is loaded."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import GATEWAY_DIR, login, sim_get, wait_until

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Receiver:
    """OTLP/HTTP trace receiver: decodes each POST /v1/traces (protobuf) into span dicts."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "attributes": {
                                        a.key: a.value.string_value or a.value.int_value
                                        for a in span.attributes
                                    },
                                    "resource": resource,
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def test_spans_reach_the_collector_and_the_model_server_gets_traceparent(
    start_gateway: Any, simulator: Any, receiver: Receiver
) -> None:
    chat = {"model": "current", "messages": [{"role": "user", "content": "trace me"}]}
    async with start_gateway(
        otel_exporter_otlp_endpoint=receiver.url, otel_service_name="gw-under-test"
    ) as gw:
        async with gw.client() as anon:
            token = await login(anon, "test", "test")
        async with gw.client(token) as c:
            r = await c.post("/v1/chat/completions", json=chat)
            assert r.status_code == 200, r.text
            request_id = r.headers["X-Request-ID"]
            r = await c.post("/api/chat", json={**chat, "stream": True})
            assert r.status_code == 200, r.text
            ui_request_id = r.headers["X-Request-ID"]
            assert (await c.get("/health")).status_code == 200  # excluded from tracing
    # leaving the gateway flushed the batch
    await wait_until(
        lambda: (
            {request_id, ui_request_id}
            <= {s["attributes"].get("request_id") for s in receiver.spans}
        ),
        timeout=30,
    )
    assert set(receiver.paths) == {"/v1/traces"}
    [server_span] = [s for s in receiver.spans if s["attributes"].get("request_id") == request_id]
    assert server_span["resource"]["service.name"] == "gw-under-test"
    assert server_span["attributes"].get("http.route") == "/v1/chat/completions"
    assert not any("/health" in s["name"] for s in receiver.spans)
    # the simulator saw the same trace in the traceparent of the relayed request
    seen = {
        entry["request_id"]: entry["traceparent"]
        for entry in await sim_get(simulator, "/sim/requests")
    }
    version, trace_id, parent_id, flags = seen[request_id].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert trace_id == server_span["trace_id"]
    # its parent is a span the gateway exported: the trace is one tree
    assert parent_id in {s["span_id"] for s in receiver.spans if s["trace_id"] == trace_id}
    ui_trace = seen[ui_request_id].split("-")[1]
    [ui_span] = [s for s in receiver.spans if s["attributes"].get("request_id") == ui_request_id]
    assert ui_trace == ui_span["trace_id"] != trace_id
    # a streamed answer is one span, not one per SSE chunk
    assert [s["trace_id"] for s in receiver.spans].count(ui_trace) == 1


async def test_without_an_endpoint_no_header_and_no_sdk(start_gateway: Any, simulator: Any) -> None:
    chat = {"model": "current", "messages": [{"role": "user", "content": "no trace"}]}
    async with start_gateway() as gw:
        async with gw.client() as anon:
            token = await login(anon, "test", "test")
        async with gw.client(token) as c:
            r = await c.post("/v1/chat/completions", json=chat)
            assert r.status_code == 200
            request_id = r.headers["X-Request-ID"]
    seen = {e["request_id"]: e["traceparent"] for e in await sim_get(simulator, "/sim/requests")}
    assert seen[request_id] is None
    # a fresh process: building the app without the setting imports none of the tracing SDK,
    # the instrumentation or the exporter (redis-py itself loads opentelemetry.sdk.metrics
    # whenever the SDK is installed)
    code = (
        "import sys; from app.main import create_app; from app.core.config import Settings; "
        "create_app(Settings(otel_exporter_otlp_endpoint=None)); "
        "from app.core import tracing; "
        "assert tracing.on_request_id is None and tracing.inject_headers is None; "
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.instrumentation', 'opentelemetry.exporter'))]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=GATEWAY_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "JWT_SECRET": "x" * 48},
    )
    assert result.returncode == 0, result.stdout + result.stderr
