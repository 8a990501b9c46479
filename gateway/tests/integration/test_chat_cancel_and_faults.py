"""Client disconnects and every upstream fault: the documented status or error frame, a usage
row, no hung request, and the user's message kept."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from sqlalchemy import select

from app.db.models import Message, RequestLog
from tests.conftest import login, read_sse, sim_get, wait_until


async def _rows(gw) -> list[RequestLog]:  # type: ignore[no-untyped-def]
    await gw.app.state.usage_recorder.flush()
    async with gw.app.state.session_factory() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def _messages(gw) -> list[Message]:  # type: ignore[no-untyped-def]
    await gw.app.state.chat_writer.flush()
    async with gw.app.state.session_factory() as session:
        return list((await session.execute(select(Message).order_by(Message.id))).scalars())


async def _token(gw) -> str:  # type: ignore[no-untyped-def]
    async with gw.client() as c:
        return await login(c, "test", "test")


def _chat(text: str, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


class TestCancellation:
    @pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
    async def test_disconnect_reaches_upstream_and_keeps_the_partial_answer(
        self,
        start_gateway,
        simulator,
        path: str,  # type: ignore[no-untyped-def]
    ) -> None:
        async with start_gateway() as gw:
            token = await _token(gw)
            body = _chat(
                "A long story please [[sim:tokens=200;itl_ms=100]]", model="current", stream=True
            )
            before = (await sim_get(simulator, "/sim/stats"))["aborted_total"]
            async with gw.client(token) as c, c.stream("POST", path, json=body) as r:
                assert r.status_code == 200
                seen = 0
                async for line in r.aiter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        seen += 1
                    if seen == 3:
                        break  # leaving the block closes the connection mid-stream
            loop = asyncio.get_running_loop()
            closed_at = loop.time()

            async def aborted() -> bool:
                return (await sim_get(simulator, "/sim/stats"))["aborted_total"] == before + 1

            await wait_until(aborted, timeout=1.0, interval=0.02)
            assert loop.time() - closed_at < 1.0
            rows = await wait_until(lambda: _rows(gw))
            assert rows[-1].status_code == 499 and rows[-1].error_code == "client_closed"
            # no usage chunk ever came: the tokens are the gateway's count of what it relayed
            assert rows[-1].tokens_source == "gateway"
            assert rows[-1].completion_tokens is not None and rows[-1].completion_tokens >= 3
            if path == "/api/chat":

                async def partial_saved() -> list[Message]:
                    msgs = await _messages(gw)
                    return msgs if len(msgs) == 2 else []

                user, answer = await wait_until(partial_saved, timeout=5)
                assert user.role == "user" and "long story" in user.content
                assert answer.role == "assistant" and answer.status == "partial"
                assert 3 <= len(answer.content.split()) < 50


class TestUpstreamFaults:
    async def test_refused_connection_is_503_and_keeps_the_message(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(vllm_base_url="http://127.0.0.1:9/v1") as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                r = await c.post("/api/chat", json=_chat("hello"))
            assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
            assert r.headers["retry-after"] == "5"
            rows = await _rows(gw)
            assert [(x.status_code, x.error_code) for x in rows] == [(503, "model_unavailable")]
            assert [(m.role, m.content) for m in await _messages(gw)] == [("user", "hello")]
            # the UI retries into the same conversation instead of starting a second one
            (message,) = await _messages(gw)
            assert r.headers["x-conversation-id"] == message.conversation_id

    async def test_500_before_the_stream_is_502_and_keeps_the_message(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway() as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                r = await c.post("/api/chat", json=_chat("hello [[sim:fail=500]]"))
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
            assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
            assert [m.role for m in await _messages(gw)] == ["user"]
            assert r.headers["x-conversation-id"] == (await _messages(gw))[0].conversation_id
            assert [(x.status_code, x.client) for x in await _rows(gw)] == [(502, "ui")]

    @pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
    async def test_connection_dropped_mid_stream_gives_error_frame_then_done(
        self,
        start_gateway,
        path: str,  # type: ignore[no-untyped-def]
    ) -> None:
        async with start_gateway() as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                body = _chat("hello [[sim:drop_after=3;itl_ms=5]]", model="current", stream=True)
                async with c.stream("POST", path, json=body) as r:
                    assert r.status_code == 200
                    events = await read_sse(r)
            assert events[-1] == "[DONE]"
            assert events[-2]["error"]["code"] == "upstream_error"
            text = "".join(
                e["choices"][0]["delta"].get("content") or ""
                for e in events
                if isinstance(e, dict) and e.get("choices")
            )
            assert text
            rows = await _rows(gw)
            assert rows[-1].status_code == 502
            if path == "/api/chat":
                msgs = await wait_until(lambda: _messages_when(gw, 2))
                assert msgs[1].status == "error" and msgs[1].content == text

    async def test_hang_before_first_token_is_504_and_cancels_upstream(
        self, start_gateway, simulator
    ) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(upstream_first_token_timeout_s=0.5) as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                r = await c.post(
                    "/v1/chat/completions",
                    json=_chat("x [[sim:hang_first]]", model="current", stream=True),
                )
            assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"

            async def aborted() -> bool:
                return (await sim_get(simulator, "/sim/stats"))["aborted_total"] >= 1

            await wait_until(aborted, timeout=2)
            assert (await _rows(gw))[-1].status_code == 504

    async def test_hang_between_chunks_is_an_error_frame(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(upstream_idle_timeout_s=0.5) as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                async with c.stream("POST", "/api/chat", json=_chat("x [[sim:hang_after=2]]")) as r:
                    assert r.status_code == 200
                    events = await read_sse(r)
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "upstream_timeout"
            assert (await _rows(gw))[-1].status_code == 504

    async def test_hang_between_chunks_on_v1_is_an_error_frame_in_time(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        # /v1 never coalesces: its idle timeout is the stream's one timer (issue 17)
        async with start_gateway(upstream_idle_timeout_s=0.5) as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                body = _chat("x [[sim:hang_after=2]]", model="current", stream=True)
                started = time.monotonic()
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    events = await read_sse(r)
                took = time.monotonic() - started
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "upstream_timeout"
            assert any(e != "[DONE]" and "choices" in e for e in events)  # the first chunks came
            assert 0.5 <= took < 10
            assert (await _rows(gw))[-1].status_code == 504

    async def test_non_streaming_failures(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(upstream_first_token_timeout_s=0.5) as gw:
            token = await _token(gw)
            async with gw.client(token) as c:
                hung = await c.post(
                    "/v1/chat/completions", json=_chat("x [[sim:hang_first]]", model="current")
                )
                assert hung.status_code == 504
                failed = await c.post(
                    "/v1/chat/completions", json=_chat("x [[sim:fail=503]]", model="current")
                )
                assert (
                    failed.status_code == 503
                    and failed.json()["error"]["code"] == "model_unavailable"
                )
                rejected = await c.post(
                    "/v1/chat/completions", json=_chat("x [[sim:fail=400]]", model="current")
                )
                assert (
                    rejected.status_code == 400
                    and rejected.json()["error"]["code"] == "upstream_rejected"
                )
            assert [r.status_code for r in await _rows(gw)] == [504, 503, 400]


async def _messages_when(gw, count: int) -> list[Message]:  # type: ignore[no-untyped-def]
    msgs = await _messages(gw)
    return msgs if len(msgs) == count else []


class TestGatewayFaults:
    @pytest.mark.parametrize("stream", [True, False])
    async def test_a_fault_in_the_relay_is_a_500_and_its_usage_row_says_so(
        self,
        start_gateway,
        monkeypatch,
        stream: bool,  # type: ignore[no-untyped-def]
    ) -> None:
        """A bug in the gateway's own code while relaying: the client gets the SPEC's 500 body,
        and the usage row and access log say 500 internal_error (they said 200 before)."""
        from app.services.chat_stream import ChatRelay

        def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug")

        monkeypatch.setattr(ChatRelay, "_process", broken)
        monkeypatch.setattr(ChatRelay, "_take_usage", broken)
        async with start_gateway() as gw:
            token = await _token(gw)
            body = _chat("hello", model="current", stream=stream)
            async with gw.client(token) as c:
                if stream:  # the fault comes after the head: the stream is cut
                    with pytest.raises(httpx.HTTPError):
                        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                            assert r.status_code == 200
                            await r.aread()
                else:
                    r = await c.post("/v1/chat/completions", json=body)
                    assert r.status_code == 500
                    assert r.json()["error"]["code"] == "internal_error"
            rows = await wait_until(lambda: _rows(gw))
            assert rows[-1].status_code == 500 and rows[-1].error_code == "internal_error"


class TestAfterTheAnswer:
    async def test_leaving_after_done_while_the_upstream_lingers_is_a_complete_answer(
        self,
        start_gateway,  # type: ignore[no-untyped-def]
    ) -> None:
        """llama.cpp keeps the response open a moment after [DONE]; the gateway reads it to the
        end. A client that leaves on [DONE] (the browser does) was recorded as 499 and its
        complete answer stored as "stopped"."""
        from aiohttp import web

        from tests.model_server import model_server

        async def chat(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for text in ("Paris", " is the capital."):
                chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
            for event in (done, usage):
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await asyncio.sleep(3)  # the end of the response comes late
            return resp

        async with model_server("lingering", chat) as url:
            async with start_gateway(vllm_base_url=url) as gw:
                token = await _token(gw)
                async with (
                    gw.client(token) as c,
                    c.stream("POST", "/api/chat", json=_chat("q")) as r,
                ):
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            break  # leave at once, as the browser's reader does

                async def answered() -> list[Message] | None:
                    rows = await _messages(gw)
                    return rows if len(rows) == 2 else None

                _, answer = await wait_until(answered, timeout=10)
                assert (answer.content, answer.status) == ("Paris is the capital.", "complete")

                async def logged() -> list[RequestLog] | None:
                    rows = await _rows(gw)
                    return rows or None

                (row,) = await wait_until(logged, timeout=10)
                assert (row.status_code, row.error_code) == (200, None)
