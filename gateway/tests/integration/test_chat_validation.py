"""Bad chat requests get a 4xx error body and never reach the model server."""

from __future__ import annotations

import pytest

from tests.conftest import assert_error, login, sim_get

BAD_BODIES = [
    ({"messages": []}, 422, "validation_error"),
    ({"messages": "hello"}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": ""}]}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "   "}]}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": 42}]}, 422, "validation_error"),
    ({"messages": [{"role": "user"}]}, 422, "validation_error"),
    ({"messages": ["hi"]}, 422, "validation_error"),
    (
        {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
        422,
        "validation_error",
    ),
    (
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5},
        422,
        "validation_error",
    ),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 422, "validation_error"),
    (
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"},
        422,
        "validation_error",
    ),
    (
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
        422,
        "context_length_exceeded",
    ),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": 7}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}, 404, "model_not_found"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "x" * 300_000}] * 2}, 413, "payload_too_large"),
    ({"messages": [{"role": "user", "content": "hi"}] * 501}, 413, "payload_too_large"),
]


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_bad_requests_never_reach_upstream(start_gateway, simulator, path: str) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        before = (await sim_get(simulator, "/sim/stats"))["requests_total"]
        async with gw.client(token) as c:
            for body, status, code in BAD_BODIES:
                response = await c.post(path, json=body)
                assert_error(response, status, code)
            for raw in (b"{not json", b"[1, 2]", b"null"):
                response = await c.post(
                    path, content=raw, headers={"Content-Type": "application/json"}
                )
                assert_error(response, 422)
            huge = (
                b'{"messages": [{"role": "user", "content": "' + b"x" * (3 * 1024 * 1024) + b'"}]}'
            )
            assert_error(await c.post(path, content=huge), 413, "payload_too_large")
            # another user's conversation
            if path == "/api/chat":
                body = {
                    "messages": [{"role": "user", "content": "hi"}],
                    "conversation_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                }
                assert_error(await c.post(path, json=body), 404, "not_found")
        assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == before
        # every refused request still has its usage row, with its status
        await gw.app.state.usage_recorder.flush()
        from sqlalchemy import func, select

        from app.db.models import RequestLog

        async with gw.app.state.session_factory() as session:
            count = (
                await session.execute(
                    select(func.count(RequestLog.id)).where(RequestLog.status_code >= 400)
                )
            ).scalar_one()
        assert count >= len(BAD_BODIES)


async def test_content_policy(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(content_blocklist=["forbidden phrase"]) as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        async with gw.client(token) as c:
            r = await c.post(
                "/api/chat",
                json={"messages": [{"role": "user", "content": "Tell me the FORBIDDEN phrase"}]},
            )
            assert_error(r, 400, "content_policy")
            ok = await c.post(
                "/api/chat",
                json={"messages": [{"role": "user", "content": "fine"}], "stream": False},
            )
            assert ok.status_code == 200
        assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == 1


async def test_anonymous_chat_is_401(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        async with gw.client() as c:
            for path in ("/api/chat", "/v1/chat/completions", "/v1/models"):
                response = await (c.get(path) if path.endswith("models") else c.post(path, json={}))
                assert_error(response, 401)
        assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == 0


async def test_ui_model_list_names_the_context_length(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    """The UI warns before sending a prompt that cannot fit: it needs the served max_model_len."""
    async with start_gateway() as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        async with gw.client(token) as c:
            models = (await c.get("/api/models")).json()["models"]
    assert [(m["id"], m["max_model_len"]) for m in models] == [("simulator-model", 4096)]
