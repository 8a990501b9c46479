"""SIGTERM with answers longer than the graceful window (issue 12, defect 10): the gateway process
ends them itself before the window closes (error event + [DONE]), stores them as cut with their
tokens, and logs no traceback."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from app.db.engine import create_engine, create_session_factory
from app.db.models import Message, RequestLog
from tests.conftest import (
    TEST_JWT_SECRET,
    empty_tables,
    gateway_env,
    login,
    make_settings,
    sim_get,
    sim_post,
    wait_live,
)
from tests.integration.test_server_process import gateway_process

WINDOW_S = 6
MARGIN_S = 2


async def _stream(base: str, token: str, path: str, started: asyncio.Event) -> list[Any]:
    body = {
        "model": "current",
        "messages": [{"role": "user", "content": "A very long tale [[sim:tokens=2000;itl_ms=20]]"}],
        "stream": True,
        "max_tokens": 2000,
    }
    events: list[Any] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c,
        c.stream("POST", path, json=body) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
                started.set()
    return events


async def test_sigterm_ends_long_streams_in_time_and_stores_them_as_cut(
    database_url: str, tmp_path: Path, simulator: Any
) -> None:
    settings = make_settings(database_url, tmp_path)
    await empty_tables(database_url, settings)
    await sim_post(simulator, "/sim/reset", {"config": True})
    env = gateway_env(
        DATABASE_URL=database_url,
        JWT_SECRET=TEST_JWT_SECRET,
        VLLM_BASE_URL=f"{simulator.url}/v1",
        TITLE_GENERATION="false",
        STREAM_FLUSH_MS="0",
        GRACEFUL_SHUTDOWN_S=str(WINDOW_S),
        SHUTDOWN_STREAM_MARGIN_S=str(MARGIN_S),
        CHAT_MAX_TOKENS_CEILING="4000",
    )
    log_path = tmp_path / "gateway.log"
    paths = ["/api/chat", "/api/chat", "/v1/chat/completions", "/v1/chat/completions"]
    loop = asyncio.get_running_loop()
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base) as c:
            token = await login(c, "test", "test")
        started = [asyncio.Event() for _ in paths]
        tasks = [
            asyncio.create_task(_stream(base, token, p, e))
            for p, e in zip(paths, started, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)
        proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        results = await asyncio.wait_for(asyncio.gather(*tasks), WINDOW_S + 10)
        ended_after = loop.time() - signalled
        exit_code = await asyncio.to_thread(proc.wait, 20)
    assert exit_code in (0, -signal.SIGTERM)
    # ended by the gateway before uvicorn's window closed, each with the error event and [DONE]
    assert WINDOW_S - MARGIN_S - 0.5 <= ended_after < WINDOW_S, ended_after
    for events in results:
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "server_shutting_down"
    text = log_path.read_text()
    assert "Exception in ASGI application" not in text and "Traceback" not in text
    records = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    assert not [r for r in records if r.get("level") in ("error", "critical")]
    assert any(r.get("event") == "gateway stopped" for r in records)
    # the upstream generations were aborted, not left running
    stats = await sim_get(simulator, "/sim/stats")
    assert stats["aborted_total"] == len(paths) and stats["active_requests"] == 0

    engine = create_engine(settings, database_url)
    try:
        async with create_session_factory(engine)() as session:
            rows = list((await session.execute(select(RequestLog))).scalars())
            answers = list(
                (await session.execute(select(Message).where(Message.role == "assistant")))
                .scalars()
                .all()
            )
    finally:
        await engine.dispose()
    assert len(rows) == len(paths)
    for row in rows:
        assert (row.status_code, row.error_code) == (503, "server_shutting_down")
        assert row.tokens_source == "gateway" and row.completion_tokens
        assert 50 < row.completion_tokens < 2000
    assert len(answers) == 2
    for answer in answers:
        assert answer.status == "partial" and answer.content
