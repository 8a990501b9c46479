"""The app class, and the two shortcuts the hot path takes through the middleware stack.

Every middleware of this app wraps `send` to look at (or add headers to) the response's start
message only; the body messages after it pass through five wrappers unchanged (security headers,
CORS, the request context, Starlette's two exception middlewares). A streamed answer sends one
body message per upstream read, so those wrappers were a per-chunk cost (issue 17). The app
records the server's own `send` in the scope; a streaming response sends its start message down
the stack as usual and its body messages straight to the server (`body_send`).

Keep it true: a middleware that changes or counts body messages (compression, say) must not be
added without dropping this shortcut.

The second: FastAPI opens an AsyncExitStack per request (to close uploaded files after a FastAPI
route); the relay paths (`plain_asgi_paths`), plain ASGI endpoints with nothing to close, skip it.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

RAW_SEND = "gateway.raw_send"


class GatewayApp(FastAPI):
    # paths whose endpoints are plain ASGI (no FastAPI dependencies, no uploaded files): they
    # skip FastAPI's per-request AsyncExitStack (set by create_app)
    plain_asgi_paths: Collection[str] = frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if not self.plain_asgi_paths:
            return app
        parent: ASGIApp | None = None
        node: ASGIApp | None = app
        while node is not None and not isinstance(node, AsyncExitStackMiddleware):
            parent, node = node, getattr(node, "app", None)
        if node is not None and parent is not None:
            parent.app = _ExitStackUnless(node, frozenset(self.plain_asgi_paths))  # type: ignore[attr-defined]
        return app


class _ExitStackUnless:
    """FastAPI's AsyncExitStackMiddleware (it closes uploaded files after a FastAPI route),
    skipped for the plain ASGI endpoints' paths: an exit stack per request is a measurable cost
    on the hot path and they have nothing to close. Another path (or a root_path prefix) gets
    the stack as before."""

    def __init__(self, stacked: AsyncExitStackMiddleware, paths: frozenset[str]) -> None:
        self.stacked = stacked
        self.bare = stacked.app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.bare(scope, receive, send)
        else:
            await self.stacked(scope, receive, send)


def body_send(scope: Scope, send: Send) -> Send:
    """The `send` for the body messages of a response whose start message went through `send`."""
    raw: Send | None = scope.get(RAW_SEND)
    return raw if raw is not None else send
