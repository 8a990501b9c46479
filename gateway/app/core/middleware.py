"""The one pure-ASGI middleware on every request.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so streaming responses pass straight through and
client disconnects stay visible to the endpoint. It gives every request an id (kept from a sane
incoming `X-Request-ID`), enforces the body size limit, turns any unclaimed exception into the
error body, and writes exactly one log line per request. Handlers add fields to that line through
`request.state.log` (see `log_fields`).
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import tracing
from app.core.errors import PayloadTooLarge, error_response, response_for_unexpected
from app.core.logging import access_line
from app.core.metrics import HTTP_DURATION, HTTP_REQUESTS
from app.core.request_context import set_request_id
from app.schemas.wire import NUL, NUL_MESSAGE

log = structlog.get_logger()

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/health", "/metrics"})
# paths served outside the router (no route template in the scope)
_FIXED_ROUTES = frozenset({"/api/chat", "/v1/chat/completions"})
_SERIES_CACHE_MAX = 1024  # methods are the client's: past this, series are looked up each time


def log_fields(request: Request) -> dict[str, Any]:
    """The mutable dict of extra fields for this request's access-log line."""
    state = request.scope.setdefault("state", {})
    fields: dict[str, Any] = state.setdefault("log", {})
    return fields


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int = 32 * 1024,
        max_header_count: int = 100,
        on_start: Callable[[Scope, Message], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        # what the middlewares above it would do to the start message, where they are skipped
        # (`app.core.asgi`'s relay lane); after the request id is added
        self.on_start = on_start
        # a random per-process prefix and a counter: unique, 32 hex characters, no syscall
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)
        # the metric children by (route template, method, status): `labels()` takes a lock and
        # builds its key on every call; the hot path asks for the same few series each time
        self._series: dict[tuple[str, str, Any], tuple[Any, Any]] = {}

    def lane(
        self, app: ASGIApp, on_start: Callable[[Scope, Message], None]
    ) -> RequestContextMiddleware:
        """The same middleware, configured the same, around another app."""
        return RequestContextMiddleware(
            app,
            max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes,
            max_header_count=self.max_header_count,
            on_start=on_start,
        )

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or self._next_id()
        set_request_id(request_id)
        if tracing.on_request_id is not None:
            tracing.on_request_id(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        fields: dict[str, Any] = state.setdefault("log", {})
        status = 0
        response_started = False
        on_start = self.on_start

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                # a new list: a response object may send its own list again
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
                if on_start is not None:
                    on_start(scope, message)
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope)
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            elif declared is not None and declared > limit:
                await _too_large(limit)(scope, receive, send_wrapper)
            else:
                await self.app(scope, _limited(receive, limit), send_wrapper)
        except Exception as exc:  # the last line of defence: a body, never a traceback
            if not response_started:
                await response_for_unexpected(exc)(scope, receive, send_wrapper)
            else:
                log.error("error after response started", exc_info=exc)
        finally:
            path = scope["path"]
            final_status = fields.pop("status_code", status or 500)
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                path if path in _FIXED_ROUTES else "unmatched"
            )
            key = (template, scope["method"], final_status)
            series = self._series.get(key)
            if series is None:
                series = (
                    HTTP_REQUESTS.labels(template, scope["method"], str(final_status)),
                    HTTP_DURATION.labels(template),
                )
                if len(self._series) < _SERIES_CACHE_MAX:
                    self._series[key] = series
            series[0].inc()
            series[1].observe(elapsed)
            line = {
                "logger": "gateway.access",
                "method": scope["method"],
                "path": path,
                "status_code": final_status,
                "latency_ms": round(elapsed * 1000, 2),
                "client_ip": (scope.get("client") or ("-",))[0],
                **fields,
            }
            access_line(line, quiet=path in _QUIET_PATHS and final_status < 400)
            set_request_id(None)

    def _refusal(self, scope: Scope) -> ASGIApp | None:
        """A client fault every route shares, answered before routing: headers past the limits
        (431), a NUL in the path (404: no resource has one) or in a query parameter (422)."""
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            return _headers_too_large(f"more than {self.max_header_count} request headers")
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            return _headers_too_large(f"request headers exceed {self.max_header_bytes} bytes")
        if NUL in scope["path"]:
            return error_response(404, "not_found", "no resource has a NUL character in its path")
        query: bytes = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if NUL in name or NUL in value:
                    field = name.replace(NUL, "") or "query"
                    message = f"{field}: {NUL_MESSAGE}"
                    details = [{"field": field, "message": NUL_MESSAGE}]
                    return error_response(422, "validation_error", message, details=details)
        return None


def _headers_too_large(message: str) -> ASGIApp:
    return error_response(431, "headers_too_large", message)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.match(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ASGIApp:
    err = PayloadTooLarge(f"request body exceeds {limit} bytes")
    return error_response(err.status_code, err.code, err.message)


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive (chunked uploads have no Content-Length)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # an HTTPException, because FastAPI turns other errors while reading into 400
                raise HTTPException(413, f"request body exceeds {limit} bytes")
        return message

    return wrapped
