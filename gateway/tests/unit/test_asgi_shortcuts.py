"""The hot path's two shortcuts through the middleware stack (`app.core.asgi`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from app.api.routes.chat import RELAY_PATHS
from app.core.asgi import RAW_SEND, GatewayApp, _ExitStackUnless, body_send
from app.main import create_app
from tests.conftest import make_settings


def _chain(app: Any) -> list[Any]:
    nodes = []
    while app is not None:
        nodes.append(app)
        app = getattr(app, "app", None)
    return nodes


async def test_relay_paths_skip_fastapi_exit_stack_and_others_keep_it(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path))
    assert isinstance(app, GatewayApp) and set(app.plain_asgi_paths) == set(RELAY_PATHS)
    shortcut = next(
        n for n in _chain(app.build_middleware_stack()) if isinstance(n, _ExitStackUnless)
    )
    seen: list[bool] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append("fastapi_middleware_astack" in scope)

    shortcut.bare = inner
    shortcut.stacked.app = inner
    for path in ("/v1/chat/completions", "/api/chat", "/api/conversations"):
        await shortcut({"type": "http", "path": path}, None, None)  # type: ignore[arg-type]
    assert seen == [False, False, True]


async def test_body_send_is_the_servers_send_when_the_app_recorded_it() -> None:
    sent: list[Message] = []

    async def server_send(message: Message) -> None:
        sent.append(message)

    async def wrapped(message: Message) -> None:
        raise AssertionError("body messages must not go through the middlewares")

    assert body_send({RAW_SEND: server_send}, wrapped) is server_send
    assert body_send({}, wrapped) is wrapped  # outside GatewayApp: the given send
