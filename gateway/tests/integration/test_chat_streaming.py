"""Seed 001's streaming suite, rebuilt: realistic timings, the Jay script, chunk coalescing."""

from __future__ import annotations

import time

import pytest

from tests.conftest import content_of, login, read_sse, sim_post
from tests.sim_process import start_simulator

JAY = "파이썬으로 Jay를 출력하는 코드를 작성해줘. Write Python code that prints Jay."


@pytest.fixture(scope="module")
def realistic_simulator(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    sim = start_simulator(
        tmp_path_factory.mktemp("sim") / "sim.log", "--ttft-ms", "150", "--itl-ms", "50"
    )
    yield sim
    sim.stop()


async def test_print_jay_streams_like_seed_001(start_gateway, realistic_simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(vllm_base_url=f"{realistic_simulator.url}/v1") as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
            started = time.perf_counter()
            first_content_at = None
            async with c.stream(
                "POST",
                "/api/chat",
                headers={"Authorization": f"Bearer {token}"},
                json={"messages": [{"role": "user", "content": JAY}]},
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["x-accel-buffering"] == "no"
                events = []
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        if (
                            first_content_at is None
                            and '"content":"' in line
                            and '"content":""' not in line
                        ):
                            first_content_at = time.perf_counter()
                        events.append(line[6:])
            elapsed = time.perf_counter() - started
    import json

    assert events[-1] == "[DONE]"
    decoded = [json.loads(e) for e in events[:-1]]
    content_events = [
        e for e in decoded if e.get("choices") and e["choices"][0]["delta"].get("content")
    ]
    answer = content_of(decoded)
    assert 50 <= len(content_events) <= 100, len(content_events)
    assert 3.0 <= elapsed <= 5.0, elapsed
    assert len(content_events) / elapsed >= 10
    assert 'print("Jay")' in answer and "```python" in answer
    assert first_content_at is not None and first_content_at - started < 1.0
    assert decoded[0]["conversation_id"] == response.headers["x-conversation-id"]


async def _stream_events(gw, token: str, prompt: str) -> tuple[list, float]:  # type: ignore[no-untyped-def]
    async with gw.client(token) as c:
        started = time.perf_counter()
        async with c.stream(
            "POST", "/api/chat", json={"messages": [{"role": "user", "content": prompt}]}
        ) as r:
            assert r.status_code == 200
            events = await read_sse(r)
        return events, time.perf_counter() - started


async def test_coalescing_merges_events_but_never_the_first_token(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    prompt = "Tell me a story [[sim:tokens=120;itl_ms=4;ttft_ms=30]]"
    counts = {}
    texts = {}
    for flush_ms in (0, 25):
        async with start_gateway(stream_flush_ms=flush_ms) as gw:
            async with gw.client() as c:
                token = await login(c, "test", "test")
            events, _ = await _stream_events(gw, token, prompt)
        content_events = [
            e
            for e in events
            if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
        ]
        counts[flush_ms] = len(content_events)
        texts[flush_ms] = content_of(events)
        if flush_ms:
            # the first token goes out alone, at once; merging starts after it
            reference = await sim_post(
                simulator,
                "/v1/chat/completions",
                {
                    "model": "simulator-model",
                    "stream": False,
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
            first_token_text = content_events[0]["choices"][0]["delta"]["content"]
            assert reference["choices"][0]["message"]["content"].startswith(first_token_text)
            assert len(first_token_text) < 20
    assert texts[0] == texts[25]
    assert counts[0] == 120
    assert counts[25] <= 0.8 * counts[0], counts


async def test_v1_is_never_coalesced(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(stream_flush_ms=50) as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        async with (
            gw.client(token) as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "current",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x [[sim:tokens=40;itl_ms=2]]"}],
                },
            ) as r,
        ):
            events = await read_sse(r)
    content_events = [
        e
        for e in events
        if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
    ]
    assert len(content_events) == 40
    assert events[-1] == "[DONE]"
    assert "conversation_id" not in events[0]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_the_head_leaves_with_the_first_events(start_gateway, monkeypatch, path: str) -> None:  # type: ignore[no-untyped-def]
    """The first events are made into bytes before the head is sent, so head and first body
    leave back to back and a client wakes once for both (issue 17: with the head first, the
    relay's work on the events sat between the two writes and clients read twice)."""
    from app.services.chat_stream import ChatRelay

    started_at_each_call: list[bool] = []
    process = ChatRelay._process

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        started_at_each_call.append(self._response_started)
        return process(self, *args, **kwargs)

    monkeypatch.setattr(ChatRelay, "_process", spy)
    async with start_gateway() as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
            body = {
                "model": "current",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            headers = {"Authorization": f"Bearer {token}"}
            async with c.stream("POST", path, headers=headers, json=body) as response:
                assert response.status_code == 200
                lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 2
    assert started_at_each_call[0] is False
