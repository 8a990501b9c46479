"""The hot path's two shortcuts through the middleware stack (`app.core.asgi`).

The relay routes' dispatch is checked against the full stack it stands in for: the same app
built with no relay dispatch (`relay_routes = {}`) answers the same requests the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app.api.routes.chat import RELAY_PATHS
from app.core.asgi import RAW_SEND, GatewayApp, _RelayDispatch, body_send
from app.core.errors import DatabaseUnavailable, RateLimited, ServiceUnavailable, Unauthorized
from app.main import create_app
from tests.conftest import make_settings

Endpoint = Callable[[Scope, Receive, Send], Any]


def _chain(app: Any) -> list[Any]:
    nodes = []
    while app is not None:
        nodes.append(app)
        app = getattr(app, "app", None)
    return nodes


def _app(tmp_path: Path, *, dispatch: bool = True) -> GatewayApp:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path))
    assert isinstance(app, GatewayApp)
    if not dispatch:
        app.relay_routes = {}
    return app


def _client(app: GatewayApp, root_path: str = "") -> httpx.AsyncClient:
    # no lifespan: these requests never reach the chat service
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://gw")


def _spy(app: GatewayApp, path: str, endpoint: Endpoint) -> None:
    # the Route object the router holds (and the dispatch, when on)
    route = next(r for r in app.router.routes if isinstance(r, Route) and r.path == path)
    route.app = endpoint


def _without_request_id(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    body = response.json() if response.content else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return response.status_code, headers, body


async def test_relay_paths_are_dispatched_under_the_user_middlewares_only(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert set(app.relay_routes) == set(RELAY_PATHS)
    chain = _chain(app.build_middleware_stack())
    dispatch = next(n for n in chain if isinstance(n, _RelayDispatch))
    # it stands where Starlette's ExceptionMiddleware stood, and hands that one everything else
    assert type(dispatch.stacked).__name__ == "ExceptionMiddleware"
    assert [type(n).__name__ for n in chain].index("RequestContextMiddleware") < chain.index(
        dispatch
    )
    seen: list[Scope] = []

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await body_send(scope, send)({"type": "http.response.body", "body": b"ok"})

    for path in RELAY_PATHS:
        _spy(app, path, endpoint)
    async with _client(app) as client:
        for path in RELAY_PATHS:
            response = await client.post(path, content=b"{}")
            assert response.status_code == 200 and response.text == "ok"
            assert response.headers["x-request-id"]  # the user middlewares ran
    for path, scope in zip(RELAY_PATHS, seen, strict=True):
        route = app.relay_routes[path]
        assert scope["route"] is route and scope["endpoint"] is route.endpoint
        assert scope["path_params"] == {} and scope["router"] is app.router
        assert scope["starlette.exception_handlers"][0]  # the app's handlers
        assert "fastapi_middleware_astack" not in scope  # no exit stack
    # a request under a root_path is the router's to match: the full stack, the same endpoint
    seen.clear()
    async with _client(app, root_path="/gw") as client:
        response = await client.post("/gw/api/chat", content=b"{}")
    assert response.status_code == 200 and response.text == "ok"
    assert len(seen) == 1 and "fastapi_middleware_astack" in seen[0]


async def test_other_methods_answer_as_the_full_stack_does(tmp_path: Path) -> None:
    fast, full = _app(tmp_path), _app(tmp_path, dispatch=False)
    async with _client(fast) as a, _client(full) as b:
        for path in RELAY_PATHS:
            for method in ("GET", "PUT", "DELETE", "HEAD"):
                answers = [await c.request(method, path) for c in (a, b)]
                assert answers[0].status_code == 405
                assert answers[0].headers["allow"] == "POST"
                assert _without_request_id(answers[0]) == _without_request_id(answers[1])
            # a trailing slash is not the relay's path: the router's redirect, on both
            answers = [await c.post(path + "/") for c in (a, b)]
            assert _without_request_id(answers[0]) == _without_request_id(answers[1])


def _collect(sent: list[Message]) -> Send:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


def _raising(exc: Exception, *, after_start: bool = False) -> Endpoint:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise exc

    return endpoint


@pytest.mark.parametrize(
    "exc",
    [
        RateLimited("slow down", retry_after_s=3),
        Unauthorized(),
        DatabaseUnavailable(),
        HTTPException(413, "request body exceeds 10 bytes"),
        HTTPException(418, "teapot"),
        ValueError("a bug"),  # no handler: the request middleware's 500 body
    ],
    ids=["app-429", "app-401", "app-503", "http-413", "http-418", "unhandled"],
)
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_exceptions_get_the_apps_handlers_as_on_the_full_stack(
    tmp_path: Path, exc: Exception, path: str
) -> None:
    answers = []
    for dispatch in (True, False):
        app = _app(tmp_path, dispatch=dispatch)
        _spy(app, path, _raising(exc))
        async with _client(app) as client:
            answers.append(await client.post(path, content=b"{}"))
    assert answers[0].status_code == getattr(exc, "status_code", 500)
    assert answers[0].json()["error"]["request_id"] == answers[0].headers["x-request-id"]
    assert _without_request_id(answers[0]) == _without_request_id(answers[1])


async def test_an_exception_after_the_response_started_sends_no_second_response(
    tmp_path: Path,
) -> None:
    runs = []
    for dispatch in (True, False):
        app = _app(tmp_path, dispatch=dispatch)
        _spy(app, "/v1/chat/completions", _raising(ServiceUnavailable("x"), after_start=True))
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"gw"), (b"content-length", b"2")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        # the request middleware logs it; nothing escapes
        await app(scope, receive, _collect(sent))
        runs.append([(m["type"], m.get("status"), m.get("body")) for m in sent])
    assert runs[0] == [
        ("http.response.start", 200, None),
        ("http.response.body", None, b"data: 1\n\n"),
    ]
    assert runs[0] == runs[1]


async def test_body_send_is_the_servers_send_when_the_app_recorded_it() -> None:
    sent: list[Message] = []

    async def server_send(message: Message) -> None:
        sent.append(message)

    async def wrapped(message: Message) -> None:
        raise AssertionError("body messages must not go through the middlewares")

    assert body_send({RAW_SEND: server_send}, wrapped) is server_send
    assert body_send({}, wrapped) is wrapped  # outside GatewayApp: the given send


def _streaming(extra_headers: list[tuple[bytes, bytes]]) -> Endpoint:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers + extra_headers}
        )
        await body_send(scope, send)({"type": "http.response.body", "body": b"data: 1\n\n"})

    return endpoint


def _in_order(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k not in ("x-request-id", "date")]


@pytest.mark.parametrize("extra", [[], [(b"vary", b"Accept-Encoding")]], ids=["plain", "vary"])
@pytest.mark.parametrize("origin", [None, "http://ui.example"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_the_relay_lane_answers_with_the_stacks_headers_in_its_order(
    tmp_path: Path, extra: list[tuple[bytes, bytes]], origin: str | None, scheme: str
) -> None:
    """A relay request without an Origin header goes past the middleware stack (the lane); its
    answer carries what the stack would have added (request id, CORS's Vary, the security
    headers), in the same order; one with an Origin (a browser) goes through the stack."""
    answers = []
    for dispatch in (True, False):
        app = _app(tmp_path, dispatch=dispatch)
        for path in RELAY_PATHS:
            _spy(app, path, _streaming(extra))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://gw") as client:
            headers = {"origin": origin} if origin else {}
            for path in RELAY_PATHS:
                answers.append(await client.post(path, content=b"{}", headers=headers))
    half = len(RELAY_PATHS)
    for lane, full in zip(answers[:half], answers[half:], strict=True):
        assert lane.status_code == full.status_code == 200 and lane.text == "data: 1\n\n"
        assert _in_order(lane) == _in_order(full)
        assert lane.headers["x-request-id"] and lane.headers["x-content-type-options"]
        assert ("strict-transport-security" in lane.headers) == (scheme == "https")


async def test_the_lane_is_taken_only_without_an_origin_and_only_for_relay_paths(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    _spy(app, "/v1/chat/completions", _streaming([]))
    async with _client(app) as client:
        assert (await client.get("/health/live")).status_code == 200  # builds the stack
        assert app._lane is not None
        stacked: list[str] = []
        stack = app.middleware_stack
        assert stack is not None

        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            stacked.append(scope["path"])
            await stack(scope, receive, send)

        app.middleware_stack = counting
        await client.post("/v1/chat/completions", content=b"{}")
        assert stacked == []
        await client.post("/v1/chat/completions", content=b"{}", headers={"origin": "http://x"})
        await client.get("/health/live")
        assert stacked == ["/v1/chat/completions", "/health/live"]


async def test_no_lane_when_another_middleware_sits_in_the_stack(tmp_path: Path) -> None:
    """A middleware the lane does not know about (added later, or OpenTelemetry's) is never
    skipped: the relay requests go through the stack."""
    app = _app(tmp_path)
    seen: list[str] = []

    class Extra:
        def __init__(self, inner: Any) -> None:
            self.app = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["path"])
            await self.app(scope, receive, send)

    app.add_middleware(Extra)
    _spy(app, "/v1/chat/completions", _streaming([]))
    async with _client(app) as client:
        r = await client.post("/v1/chat/completions", content=b"{}")
    assert r.status_code == 200 and seen == ["/v1/chat/completions"]
    assert app._lane is None


async def test_no_lane_once_fastapi_telemetry_is_on_after_the_stack_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack is built at the lifespan's first message; FastAPI's telemetry can be switched
    on by the start-up that follows (its auto-configuration): the first request asks again."""
    app = _app(tmp_path)
    app.middleware_stack = app.build_middleware_stack()
    assert app._lane is not None
    monkeypatch.setattr(app._native_telemetry, "enabled", lambda: True)
    _spy(app, "/v1/chat/completions", _streaming([]))
    stacked: list[str] = []
    stack = app.middleware_stack

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        stacked.append(scope["path"])
        await stack(scope, receive, send)

    app.middleware_stack = counting
    async with _client(app) as client:
        r = await client.post("/v1/chat/completions", content=b"{}")
    assert r.status_code == 200 and stacked == ["/v1/chat/completions"]
    assert app._lane is None
