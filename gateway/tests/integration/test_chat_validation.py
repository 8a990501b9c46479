"""Bad chat requests get a 4xx error body and never reach the model server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import assert_error, login, sim_get

BAD_BODIES = [
    ({"messages": []}, 422, "validation_error"),
    ({"messages": "hello"}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "validation_error"),
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
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 100_000}, 422, "validation_error"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, 422, "validation_error"),
    ({"messages": [{"role": "tool"}]}, 422, "validation_error"),
    ({"messages": [{"role": {}, "content": "hi"}]}, 422, "validation_error"),  # was a 500
    ({"messages": [{"role": "user", "content": "x" * 300_000}] * 2}, 413, "payload_too_large"),
    ({"messages": [{"role": "user", "content": "hi"}] * 501}, 413, "payload_too_large"),
]


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_bad_requests_never_reach_upstream(start_gateway, simulator, path: str) -> None:  # type: ignore[no-untyped-def]
    ui = path == "/api/chat"
    async with start_gateway() as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        before = (await sim_get(simulator, "/sim/stats"))["requests_total"]
        async with gw.client(token) as c:
            for body, status, code in BAD_BODIES:
                response = await c.post(path, json=body)
                err = assert_error(response, status if ui or status != 422 else 400, code)
                if not ui:  # OpenAI's shape: the SDK raises BadRequestError
                    assert {"type", "param"} <= set(err), err
            if ui:  # the UI never sends an empty question; /v1 relays it as vLLM would
                for empty in ("", "   "):
                    response = await c.post(
                        path, json={"messages": [{"role": "user", "content": empty}]}
                    )
                    assert_error(response, 422, "validation_error")
            for raw in (b"{not json", b"[1, 2]", b"null"):
                response = await c.post(
                    path, content=raw, headers={"Content-Type": "application/json"}
                )
                assert_error(response, 422 if ui else 400)
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


HI = {"role": "user", "content": "hi"}
NESTED = b"[" * 5000 + b"]" * 5000


def _hostile_bodies(path: str) -> list[tuple[bytes, dict[str, str], int, str, str | None]]:
    """(raw body, headers, status, code, the field the message names)."""
    json_type = {"Content-Type": "application/json"}

    def dumps(body: Any) -> bytes:
        return json.dumps(body).encode()

    cases: list[tuple[bytes, dict[str, str], int, str, str | None]] = [
        (
            dumps({"messages": [{"role": "user", "content": "a\u0000b"}]}),
            json_type,
            422,
            "validation_error",
            "messages.0.content",
        ),
        (
            dumps(
                {
                    "messages": [
                        HI,
                        {"role": "assistant", "content": [{"type": "text", "text": "\u0000"}]},
                    ]
                }
            ),
            json_type,
            422,
            "validation_error",
            "messages.1.content.0.text",
        ),
        (
            dumps({"messages": [{"role": "user\u0000", "content": "hi"}]}),
            json_type,
            422,
            "validation_error",
            "messages.0.role",
        ),
        (dumps({"messages": [HI], "user": "\u0000"}), json_type, 422, "validation_error", "user"),
        (dumps({"messages": [HI], "a\u0000": 1}), json_type, 422, "validation_error", "body"),
        (
            dumps({"messages": [HI], "max_tokens": 2**63}),
            json_type,
            422,
            "validation_error",
            "max_tokens",
        ),
        (
            dumps({"messages": [HI], "seed": 2**64 - 1}),
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        # orjson reads an integer past 64 bits as a float: still out of range, not relayed
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551616}',
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "seed": -9223372036854775809}',
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1e30}',
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        # the walk over the body runs only when its bytes could hold a fault: an exponent in
        # either case, 19 digits in a row, the NUL escape (in a key too)
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1E30}',
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "seed": 9223372036854775808.0}',
            json_type,
            422,
            "validation_error",
            "seed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "x\\u0000": 1}',
            json_type,
            422,
            "validation_error",
            None,
        ),
        (
            dumps({"messages": [HI], "max_tokens": 10**30}),
            json_type,
            422,
            "validation_error",
            "max_tokens",
        ),
        (
            dumps({"messages": [HI], "max_tokens": 1.5}),
            json_type,
            422,
            "validation_error",
            "max_tokens",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
            json_type,
            422,
            "invalid_json",
            None,
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            json_type,
            422,
            "invalid_json",
            None,
        ),
        (
            b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
            json_type,
            422,
            "invalid_json",
            None,
        ),
        (
            b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
            json_type,
            422,
            "invalid_json",
            None,
        ),
        (b'{"messages": [], "x": ' + NESTED + b"}", json_type, 422, "invalid_json", None),
        (NESTED, json_type, 422, "invalid_json", None),
        (b"", json_type, 422, "invalid_json", None),
        (b"", {}, 422, "invalid_json", None),
        (b"   ", json_type, 422, "invalid_json", None),
        (b'"just a string"', json_type, 422, "validation_error", None),
        (
            b"messages=hi",
            {"Content-Type": "application/x-www-form-urlencoded"},
            422,
            "invalid_json",
            None,
        ),
        (
            b'--b\r\nContent-Disposition: form-data; name="m"\r\n\r\nhi\r\n--b--',
            {"Content-Type": "multipart/form-data; boundary=b"},
            422,
            "invalid_json",
            None,
        ),
        (
            dumps({"messages": {"role": "user", "content": "hi"}}),
            json_type,
            422,
            "validation_error",
            None,
        ),
        (dumps({"messages": [HI], "stream": 1}), json_type, 422, "validation_error", None),
        (dumps({"messages": [[HI]]}), json_type, 422, "validation_error", None),
    ]
    if path == "/v1/chat/completions":
        cases.append(
            (
                dumps({"messages": [HI], "stream_options": "yes", "stream": True}),
                json_type,
                422,
                "validation_error",
                None,
            )
        )
    if path == "/api/chat":  # /v1 relays content parts of any type (vLLM knows what they mean)
        cases += [
            (
                dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                json_type,
                422,
                "validation_error",
                "messages.0.content.0",
            ),
            (
                dumps({"messages": [HI], "system_prompt": "be\u0000"}),
                json_type,
                422,
                "validation_error",
                "system_prompt",
            ),
            (
                dumps({"messages": [HI], "conversation_id": "\u0000"}),
                json_type,
                422,
                "validation_error",
                "conversation_id",
            ),
            (
                dumps({"messages": [HI], "conversation_id": 2**70}),
                json_type,
                422,
                "validation_error",
                None,
            ),
            (dumps({"messages": [HI], "save": "yes"}), json_type, 422, "validation_error", None),
            # a regenerated answer belongs to a turn of a conversation: none given, nothing stored
            (
                dumps({"messages": [HI], "regenerate": True}),
                json_type,
                422,
                "validation_error",
                "regenerate",
            ),
        ]
    return cases


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_hostile_chat_bodies_are_4xx_before_upstream(
    start_gateway, simulator, path: str
) -> None:  # type: ignore[no-untyped-def]
    """Huge, malformed, wrongly typed, deeply nested, invalid UTF-8, NUL, giant numbers, empty,
    wrong content type: a 4xx error body naming the field, nothing sent upstream or stored, one
    usage row each, and the gateway still answers a good request afterwards."""
    cases = _hostile_bodies(path)
    async with start_gateway() as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        before = (await sim_get(simulator, "/sim/stats"))["requests_total"]
        async with gw.client(token) as c:
            for raw, headers, status, code, field in cases:
                response = await c.post(path, content=raw, headers=headers)
                # /v1 answers an invalid request as OpenAI does: 400, naming the field in `param`
                expected = 400 if status == 422 and path.startswith("/v1/") else status
                err = assert_error(response, expected, code)
                if field is not None:
                    assert err["message"].startswith(f"{field}:"), (raw[:80], err)
                    if path.startswith("/v1/"):
                        assert err["param"] == field, err
                assert "x-conversation-id" not in response.headers
            assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == before
            conversations = await c.get("/api/conversations")
            assert conversations.json()["conversations"] == []
            ok = await c.post(path, json={"messages": [HI], "stream": False})
            assert ok.status_code == 200, ok.text
        await gw.app.state.usage_recorder.flush()
        from sqlalchemy import func, select

        from app.db.models import RequestLog

        async with gw.app.state.session_factory() as session:
            refused = (
                await session.execute(
                    select(func.count(RequestLog.id)).where(RequestLog.status_code >= 400)
                )
            ).scalar_one()
        assert refused == len(cases)
