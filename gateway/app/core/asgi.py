"""The app class, and the two shortcuts the hot path takes through the middleware stack.

Every middleware of this app wraps `send` to look at (or add headers to) the response's start
message only; the body messages after it pass through five wrappers unchanged (security headers,
CORS, the request context, Starlette's two exception middlewares). A streamed answer sends one
body message per upstream read, so those wrappers were a per-chunk cost (issue 17). The app
records the server's own `send` in the scope; a streaming response sends its start message down
the stack as usual and its body messages straight to the server (`body_send`).

Keep it true: a middleware that changes or counts body messages (compression, say) must not be
added without dropping this shortcut.

The second: the relay routes (`relay_routes`: plain ASGI endpoints, no FastAPI dependencies, no
uploaded files) are dispatched by one layer (`_RelayDispatch`) in place of the three that sit
under the user middlewares for every other route: Starlette's ExceptionMiddleware, FastAPI's
AsyncExitStackMiddleware (it closes uploaded files; they have none) and the router's walk. That
layer does what those three do for these paths, in one frame: it sets what the router sets in
the scope (`router`, `route`, `endpoint`, `path_params`, the exception handlers, the telemetry
route) and turns an exception into a response with the same handlers Starlette's
ExceptionMiddleware looks up, the same way (`_handle`). Issue 14's "the routes cost no more than
the middleware did" is measured with `benchmarks.hot_path --also`.

Another path, another scope type, or a scope with a `root_path` (the router strips it before
matching) goes down the full stack as before.

The third: a relay route's request without an Origin header (an API client; a browser sends
one) skips the stack above the dispatch as well (`_relay_lane`): the request middleware alone,
which adds to the start message what CORS and the security headers would have added. Only while
the stack is the one it knows, layer for layer; the app's first request builds both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi._body_limit import AppBodyLimitMiddleware
from fastapi.telemetry._api import _route_selected  # names the request's span after its route
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
from starlette._exception_handler import _lookup_exception_handler
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.middleware import RequestContextMiddleware
from app.core.security_headers import SecurityHeadersMiddleware

RAW_SEND = "gateway.raw_send"
_TELEMETRY = "fastapi.telemetry"


class GatewayApp(FastAPI):
    # the plain ASGI relay routes, by path (set by create_app; they stay in app.router.routes,
    # where /openapi.json, url_for and a root_path-prefixed request find them)
    relay_routes: Mapping[str, Route] = {}
    # the relay routes' lane past the middleware stack (`_relay_lane`), once the stack is built
    _lane: ASGIApp | None = None
    _lane_confirmed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        scope[RAW_SEND] = send
        try:
            lane = self._lane
            if lane is not None and not self._lane_confirmed:
                # FastAPI's telemetry can be switched on by the lifespan's start-up, after the
                # stack was built (at the lifespan's first message): asked at the first request
                self._lane_confirmed = True
                if self._native_telemetry.enabled():
                    self._lane = lane = None
            if (
                lane is not None
                and scope["path"] in self.relay_routes
                and not self.root_path
                and not scope.get("root_path")
                and not getattr(self, "_is_instrumented_by_opentelemetry", False)
                and not _has_origin(scope)
            ):
                scope["app"] = self
                await lane(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            # the server's `send` is a method of its request object, which holds the scope: a
            # reference cycle per request, left to the garbage collector (issue 17) unless broken
            del scope[RAW_SEND]

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        self._lane, self._lane_confirmed = None, False
        if not self.relay_routes:
            return app
        parent: ASGIApp | None = None
        node: ASGIApp | None = app
        while node is not None and not isinstance(node, ExceptionMiddleware):
            parent, node = node, getattr(node, "app", None)
        if node is not None and parent is not None:
            dispatch = _RelayDispatch(node, dict(self.relay_routes), self.router)
            parent.app = dispatch  # type: ignore[attr-defined]
            self._lane = _relay_lane(app, dispatch)
        return app


class _RelayDispatch:
    """In place of Starlette's ExceptionMiddleware: a relay route's request goes to its endpoint
    from here, with that middleware's exception handling; any other request goes on to the
    ExceptionMiddleware (then FastAPI's exit stack and the router) as before."""

    def __init__(
        self, stacked: ExceptionMiddleware, routes: dict[str, Route], router: ASGIApp
    ) -> None:
        self.stacked = stacked
        self.routes = routes
        self.router = router
        # the very dicts the ExceptionMiddleware looks up (a handler added later is seen too)
        self.handlers = (stacked._exception_handlers, stacked._status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope.get("root_path"):
            await self.stacked(scope, receive, send)
            return
        # what ExceptionMiddleware, the router and the route put in the scope
        scope["starlette.exception_handlers"] = self.handlers
        if "router" not in scope:
            scope["router"] = self.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        if scope.get(_TELEMETRY) is not None:
            _route_selected(scope=scope, path=route.path_format)
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await route.app(scope, receive, sender)
        except Exception as exc:
            await self._handle(exc, started, scope, receive, sender)

    async def _handle(
        self, exc: Exception, started: bool, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Starlette's `wrap_app_handling_exceptions`, for an exception the endpoint raised."""
        exception_handlers, status_handlers = self.handlers
        handler: Any = None
        if isinstance(exc, HTTPException):
            handler = status_handlers.get(exc.status_code)
        if handler is None:
            handler = _lookup_exception_handler(exception_handlers, exc)
        if handler is None:
            raise exc
        if started:
            raise RuntimeError("Caught handled exception, but response already started.") from exc
        request = Request(scope, receive, send)
        if is_async_callable(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)
        if response is not None:
            await response(scope, receive, send)
        # reused exception instances accumulate tracebacks across requests (as Starlette does)
        exc.__traceback__ = None


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


# the stack above the relay dispatch that the lane stands in for, outermost first
_LANE_STACK = (
    ServerErrorMiddleware,
    ExceptionTelemetryMiddleware,
    AppBodyLimitMiddleware,
    SecurityHeadersMiddleware,
    CORSMiddleware,
    RequestContextMiddleware,
    _RelayDispatch,
)


def _relay_lane(stack: ASGIApp, dispatch: ASGIApp) -> ASGIApp | None:
    """The relay routes' requests without an Origin header (API clients; a browser sends one)
    past five of the six layers above the dispatch: what those do for such a request is done
    by the request middleware's own start-message hook, in the same order (CORS's `Vary`, then
    the security headers), and the rest is nothing here: no Origin for CORS, no exception for
    the server-error and telemetry layers to see (the request middleware answers every one),
    no body limit of FastAPI's own. Per request that was ~5 % of the gateway at c32 (issue 17).

    Only for the stack it knows, layer for layer: another middleware anywhere above the
    dispatch (OpenTelemetry's wraps the stack), and there is no lane; with FastAPI's telemetry
    on at the first request, `GatewayApp` drops it."""
    nodes: list[Any] = []
    node: Any = stack
    while node is not None and len(nodes) < len(_LANE_STACK):
        nodes.append(node)
        node = getattr(node, "app", None)
    if [type(n) for n in nodes] != list(_LANE_STACK) or nodes[-1] is not dispatch:
        return None
    security: SecurityHeadersMiddleware = nodes[3]
    context: RequestContextMiddleware = nodes[5]

    def on_start(scope: Scope, message: Message) -> None:
        _vary_origin(message)
        security.add_headers(scope, message)

    return context.lane(dispatch, on_start)


def _vary_origin(message: Message) -> None:
    """What Starlette's CORSMiddleware does to the answer to a request without an Origin."""
    headers = message["headers"]
    if any(name == b"vary" for name, _ in headers):
        merged = MutableHeaders(scope=message)
        merged["Vary"] = ", ".join([*merged.getlist("Vary"), "Origin"])
    else:
        headers.append((b"vary", b"Origin"))


def body_send(scope: Scope, send: Send) -> Send:
    """The `send` for the body messages of a response whose start message went through `send`."""
    raw: Send | None = scope.get(RAW_SEND)
    return raw if raw is not None else send
