"""The app class, and the one shortcut the hot path takes through the middleware stack.

Every middleware of this app wraps `send` to look at (or add headers to) the response's start
message only; the body messages after it pass through five wrappers unchanged (security headers,
CORS, the request context, Starlette's two exception middlewares). A streamed answer sends one
body message per upstream read, so those wrappers were a per-chunk cost (issue 17). The app
records the server's own `send` in the scope; a streaming response sends its start message down
the stack as usual and its body messages straight to the server (`body_send`).

Keep it true: a middleware that changes or counts body messages (compression, say) must not be
added without dropping this shortcut.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

RAW_SEND = "gateway.raw_send"


class GatewayApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def body_send(scope: Scope, send: Send) -> Send:
    """The `send` for the body messages of a response whose start message went through `send`."""
    raw: Send | None = scope.get(RAW_SEND)
    return raw if raw is not None else send
