"""Security headers on every HTTP response: API JSON, SSE streams, errors, 404s and preflights.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so streams pass straight through and client
disconnects stay visible to the endpoint. It runs on the hot path, so the header tuples are built
once; per response it only reads the names already set and appends the missing ones to the
`http.response.start` message. A header the response already sets is left as it is (the SSE relay's
`Cache-Control: no-cache`, say).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Header = tuple[bytes, bytes]

# API answers are data, never documents: nothing may load, run or frame them
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# FastAPI's Swagger page: its JS and CSS come from jsDelivr, its favicon from fastapi.tiangolo.com,
# it starts with an inline script and calls the API (and /openapi.json) on this origin
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://cdn.jsdelivr.net https://fastapi.tiangolo.com; "
    "font-src 'self' data: https://cdn.jsdelivr.net; "
    "connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect"})
HSTS = "max-age=31536000; includeSubDomains"

_COMMON: tuple[Header, ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


def _headers(csp: str, *, https: bool) -> tuple[Header, ...]:
    extra: tuple[Header, ...] = ((b"content-security-policy", csp.encode()),)
    if https:  # HSTS over plain http is ignored by browsers and wrong behind a TLS-less hop
        extra += ((b"strict-transport-security", HSTS.encode()),)
    return _COMMON + extra


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, docs_paths: Collection[str] = DOCS_PATHS) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        # (docs page?, https?) -> the headers to add
        self._sets = {
            (docs, https): _headers(DOCS_CSP if docs else API_CSP, https=https)
            for docs in (False, True)
            for https in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.add_headers(scope, message)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def add_headers(self, scope: Scope, message: Message) -> None:
        """Add to a start message the headers it does not set already."""
        added = self._sets[scope["path"] in self.docs_paths, scope.get("scheme") == "https"]
        headers = message.get("headers", ())
        present = {name.lower() for name, _ in headers}
        message["headers"] = [*headers, *(header for header in added if header[0] not in present)]
