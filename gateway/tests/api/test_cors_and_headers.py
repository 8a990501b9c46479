"""CORS (exact origins, with credentials) and the security headers on every kind of response."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.responses import JSONResponse

from app.core.config import Settings
from app.core.security_headers import API_CSP, DOCS_CSP
from tests.conftest import assert_error, login, make_settings, read_sse


def add_route_first(app: FastAPI, path: str, endpoint: Any) -> None:
    """Test-only routes go before the web UI's catch-all route."""
    app.add_api_route(path, endpoint)
    app.router.routes.insert(0, app.router.routes.pop())


UI = "https://chat.example.com"
DEV_UI = "http://localhost:5173"
EVIL = "https://evil.example"
EXPOSED = {
    "x-request-id",
    "x-conversation-id",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
}
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """This module's gateway allows two browser origins (overrides conftest's `settings`)."""
    return make_settings(database_url, tmp_path, cors_origins=[UI, DEV_UI])


@pytest.fixture
async def https_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The same app reached over https (ASGITransport sets scope["scheme"] from the URL)."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway.test") as c:
        yield c


def preflight_headers(origin: str, method: str = "POST", **extra: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        **extra,
    }


def csv(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def assert_security_headers(
    response: httpx.Response, *, csp: str = API_CSP, https: bool = False
) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get_list(name) == [value], (name, response.headers)
    assert response.headers.get_list("content-security-policy") == [csp]
    if https:
        assert response.headers.get_list("strict-transport-security") == [HSTS]
    else:
        assert "strict-transport-security" not in response.headers


def assert_no_cors(response: httpx.Response) -> None:
    leaked = [name for name in response.headers if name.lower().startswith("access-control-")]
    assert leaked == [], leaked


def assert_cors_allowed(response: httpx.Response, origin: str) -> None:
    assert response.headers.get_list("access-control-allow-origin") == [origin]
    assert response.headers["access-control-allow-credentials"] == "true"
    assert csv(response.headers["access-control-expose-headers"]) == EXPOSED
    assert "origin" in csv(response.headers["vary"])


class TestPreflight:
    @pytest.mark.parametrize(
        "path", ["/api/auth/login", "/api/conversations", "/api/chat", "/v1/chat/completions"]
    )
    async def test_allowed_origin_is_echoed_with_credentials(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        # the chat paths matter most: the fast path alone would answer OPTIONS with 405
        r = await client.options(path, headers=preflight_headers(UI))
        assert r.status_code == 200, r.text
        assert r.headers.get_list("access-control-allow-origin") == [UI]
        assert r.headers["access-control-allow-credentials"] == "true"
        assert csv(r.headers["access-control-allow-methods"]) == {
            "get",
            "post",
            "put",
            "patch",
            "delete",
            "options",
        }
        assert {"authorization", "content-type", "x-request-id"} <= csv(
            r.headers["access-control-allow-headers"]
        )
        assert r.headers["access-control-max-age"] == "600"
        assert "origin" in csv(r.headers["vary"])
        assert_security_headers(r)
        assert r.headers["cache-control"] == "no-store"

    async def test_every_listed_origin_is_allowed(self, client: httpx.AsyncClient) -> None:
        r = await client.options("/api/chat", headers=preflight_headers(DEV_UI))
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == DEV_UI

    @pytest.mark.parametrize("origin", [EVIL, "https://chat.example.com.evil.example", "null"])
    async def test_unlisted_origin_is_refused(self, client: httpx.AsyncClient, origin: str) -> None:
        r = await client.options("/api/chat", headers=preflight_headers(origin))
        # Starlette answers a refused preflight with 400 and no Allow-Origin: the browser blocks
        assert r.status_code == 400
        assert r.text == "Disallowed CORS origin"
        assert "access-control-allow-origin" not in r.headers
        assert_security_headers(r)

    async def test_unlisted_request_header_is_refused(self, client: httpx.AsyncClient) -> None:
        headers = preflight_headers(UI)
        headers["Access-Control-Request-Headers"] = "authorization, x-api-secret"
        r = await client.options("/api/conversations", headers=headers)
        assert r.status_code == 400
        assert r.text == "Disallowed CORS headers"

    async def test_options_without_preflight_headers_is_not_a_preflight(
        self, client: httpx.AsyncClient
    ) -> None:
        # a bare OPTIONS reaches the app: the chat route's own 405, with CORS and security headers
        r = await client.options("/api/chat", headers={"Origin": UI})
        err = assert_error(r, 405, "method_not_allowed")
        assert err["message"] == "use POST"
        assert_cors_allowed(r, UI)
        assert_security_headers(r)


class TestSimpleRequests:
    async def test_allowed_origin_gets_origin_and_exposed_headers(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.get("/health/live", headers={"Origin": UI})
        assert r.status_code == 200
        assert_cors_allowed(r, UI)
        assert len(r.headers["x-request-id"]) == 32

    async def test_errors_are_readable_cross_origin(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/auth/me", headers={"Origin": UI})
        assert_error(r, 401, "unauthorized")
        assert_cors_allowed(r, UI)
        r = await client.post("/api/chat", json={}, headers={"Origin": UI})
        assert_error(r, 401, "unauthorized")
        assert_cors_allowed(r, UI)

    async def test_unlisted_origin_gets_no_cors_headers(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/health/live", headers={"Origin": EVIL})
        assert r.status_code == 200  # CORS is enforced by the browser, which sees no grant
        assert "access-control-allow-origin" not in r.headers
        # Starlette still adds its fixed Allow-Credentials/Expose-Headers to any request with an
        # Origin; without Allow-Origin they grant nothing
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "origin" in csv(r.headers["vary"])
        assert_security_headers(r)

    async def test_no_origin_no_cors_headers(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/health/live")
        assert r.status_code == 200
        assert_no_cors(r)

    async def test_request_context_fallback_keeps_cors_and_security_headers(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """The 503 that RequestContextMiddleware writes for an unclaimed database outage passes
        through CORS too, so the UI can read its body and Retry-After."""

        async def database_gone() -> None:
            raise ConnectionRefusedError("the database went away")

        add_route_first(app, "/test-only/database-gone", database_gone)
        r = await client.get("/test-only/database-gone", headers={"Origin": UI})
        assert_error(r, 503, "database_unavailable")
        assert r.headers["retry-after"] == "5"
        assert_cors_allowed(r, UI)
        assert_security_headers(r)

    async def test_unexpected_error_keeps_headers(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        async def broken() -> None:
            raise RuntimeError("a bug")

        add_route_first(app, "/test-only/broken", broken)
        r = await client.get("/test-only/broken", headers={"Origin": UI})
        assert_error(r, 500, "internal_error")
        assert_cors_allowed(r, UI)
        assert_security_headers(r)


class TestSecurityHeaders:
    @pytest.mark.parametrize(
        ("method", "path", "body", "status"),
        [
            ("GET", "/health", None, 200),
            ("GET", "/openapi.json", None, 200),
            ("GET", "/api/nothing-here", None, 404),
            ("POST", "/api/auth/login", {}, 422),
            ("GET", "/api/auth/me", None, 401),
            ("POST", "/api/chat", {"messages": []}, 401),
            ("POST", "/v1/chat/completions", {"messages": []}, 401),
            ("GET", "/api/chat", None, 405),
        ],
    )
    async def test_on_every_kind_of_response(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: Any,
        status: int,
    ) -> None:
        r = await client.request(method, path, json=body)
        assert r.status_code == status, r.text
        assert_security_headers(r)
        assert r.headers.get_list("cache-control") == ["no-store"]
        assert r.headers["x-request-id"]

    async def test_on_the_login_413s(self, client: httpx.AsyncClient) -> None:
        big = b'{"username": "admin", "password": "' + b"x" * (3 * 1024 * 1024) + b'"}'
        declared = await client.post(
            "/api/auth/login",
            content=big,
            headers={"Content-Type": "application/json", "Origin": UI},
        )
        assert_error(declared, 413, "payload_too_large")  # written by the request middleware
        assert_security_headers(declared)
        assert_cors_allowed(declared, UI)

        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"username": "admin", "password": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}'

        chunked = await client.post(
            "/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_error(chunked, 413, "payload_too_large")  # raised while the route reads
        assert_security_headers(chunked)

    async def test_a_route_own_cache_control_is_kept(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        async def cacheable() -> JSONResponse:
            return JSONResponse({"ok": True}, headers={"Cache-Control": "max-age=60"})

        add_route_first(app, "/test-only/cacheable", cacheable)
        r = await client.get("/test-only/cacheable")
        assert r.headers.get_list("cache-control") == ["max-age=60"]
        assert_security_headers(r)

    async def test_hsts_only_over_https(
        self, client: httpx.AsyncClient, https_client: httpx.AsyncClient
    ) -> None:
        assert "strict-transport-security" not in (await client.get("/health/live")).headers
        r = await https_client.get("/health/live")
        assert_security_headers(r, https=True)
        r = await https_client.get("/api/nothing-here")
        assert_error(r, 404, "not_found")
        assert_security_headers(r, https=True)

    async def test_docs_page_still_loads_its_assets(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/docs")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert_security_headers(r, csp=DOCS_CSP)
        directives = {d.split()[0]: d.split()[1:] for d in DOCS_CSP.split("; ") if d.strip()}
        html = r.text
        assets = {
            "script-src": re.findall(r'<script src="([^"]+)"', html),
            "style-src": re.findall(r'rel="stylesheet" href="([^"]+)"', html),
            "img-src": re.findall(r'rel="shortcut icon" href="([^"]+)"', html),
        }
        assert assets["script-src"] and assets["style-src"], html
        for directive, urls in assets.items():
            for url in urls:
                origin = "/".join(url.split("/")[:3])
                assert origin in directives[directive], (directive, url)
        assert "<script>" in html and "'unsafe-inline'" in directives["script-src"]
        assert "'self'" in directives["connect-src"]  # fetches /openapi.json and the API


async def test_streamed_chat_through_uvicorn_carries_every_header(start_gateway) -> None:  # type: ignore[no-untyped-def]
    """A real server and a real SSE stream: the headers ride on the stream's response start,
    the stream is not buffered, and HSTS follows X-Forwarded-Proto from the trusted proxy."""
    async with start_gateway(cors_origins=[UI]) as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
            async with c.stream(
                "POST",
                "/api/chat",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Origin": UI,
                    "X-Forwarded-Proto": "https",
                },
                json={"messages": [{"role": "user", "content": "hello [[sim:tokens=20]]"}]},
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                events = await read_sse(r)
    assert events[-1] == "[DONE]"
    assert_security_headers(r, https=True)
    assert r.headers.get_list("cache-control") == ["no-cache"]  # the relay's own, kept
    assert_cors_allowed(r, UI)
    assert r.headers["x-conversation-id"]


class TestSettings:
    def _settings(self, **values: object) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["*", ["*"], "http://localhost:3000, *"])
    def test_wildcard_is_refused(self, value: object) -> None:
        with pytest.raises(ValidationError, match="a wildcard cannot be combined with credentials"):
            self._settings(cors_origins=value)

    def test_wildcard_from_the_environment_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CORS_ORIGINS", "*")
        with pytest.raises(ValidationError, match="CORS_ORIGINS must list origins"):
            Settings(_env_file=None)  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        "origin",
        [
            "https://chat.example.com/",
            "https://chat.example.com/app",
            "https://chat.example.com?x=1",
            "https://chat.example.com#top",
            "chat.example.com",
            "//chat.example.com",
            "ftp://chat.example.com",
            "https://user@chat.example.com",
            "https://*.example.com",
            "https://chat.example.com:99999",
            "https://chat.example.com:0",
            "https://",
            "null",
        ],
    )
    def test_malformed_origin_is_refused(self, origin: str) -> None:
        with pytest.raises(ValidationError, match=r"is not an origin|has an invalid port"):
            self._settings(cors_origins=f"http://localhost:3000,{origin}")

    def test_origins_are_normalised_as_browsers_send_them(self) -> None:
        s = self._settings(
            cors_origins="HTTPS://Chat.Example.com:443, http://localhost:80, "
            "http://127.0.0.1:3000, http://[::1]:8080"
        )
        assert s.cors_origins == [
            "https://chat.example.com",
            "http://localhost",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
        ]

    def test_default_is_the_local_ui(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CORS_ORIGINS", raising=False)
        assert self._settings().cors_origins == ["http://localhost:3000"]
