"""Chaos: streams on both chat routes cut by their clients at random points (a reset while the
body is still being sent, before the first token, mid-stream, right after `[DONE]`) or read to
the end, on SQLite, Postgres and Postgres +
Redis (issue 12). Nothing lost, nothing miscounted: one usage row per request, the upstream
aborted exactly for the cuts before the end, tokens for every row with output, answers stored
complete or partial as they ended, every question stored, every stream slot and token
reservation settled. The figures are printed for the closing note (`pytest -s`)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from app.db.models import Message, RequestLog
from app.main import create_app
from tests.conftest import (
    SHARED_REDIS,
    LiveGateway,
    bearer,
    empty_tables,
    login,
    make_settings,
    sim_get,
    sim_post,
    wait_until,
)
from tests.ports import free_port

REQUESTS = int(os.environ.get("CHAOS_REQUESTS", "60"))
PARALLEL = 12
MODES = ("body_reset", "before_first", "mid", "after_done", "full")
ASKS = {
    "body_reset": "[[sim:tokens=5]]",  # never arrives whole
    "before_first": "[[sim:ttft_ms=6000;tokens=20;itl_ms=10]]",  # cut long before that
    "mid": "[[sim:tokens=300;itl_ms=20]]",  # long: a cut at event <= 8 is surely mid-way
    "after_done": "[[sim:tokens=25;itl_ms=4]]",
    "full": "[[sim:tokens=25;itl_ms=4]]",
}


@dataclass
class Shot:
    index: int
    path: str
    mode: str
    request_id: str
    question: str
    status: int | None = None
    content_events: int = 0
    saw_done: bool = False


def _is_content(line: str) -> bool:
    return '"content":"' in line and '"content":""' not in line


async def _sent_upstream(sim: Any, request_id: str) -> bool:
    return any(r["request_id"] == request_id for r in await sim_get(sim, "/sim/requests"))


async def _fire(base: str, token: str, sim: Any, shot: Shot, rng: random.Random) -> None:
    body = {
        "model": "current",
        "messages": [{"role": "user", "content": shot.question}],
        "stream": True,
    }
    headers = {**bearer(token), "X-Request-ID": shot.request_id}
    where = f"{shot.mode} {shot.path} {shot.request_id}"
    if shot.mode == "body_reset":
        await _reset_in_body(base, headers, shot.path, json.dumps(body).encode())
        return
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        if shot.mode == "before_first":
            # no byte comes back before the first token: cut once the model server has the request
            request = c.build_request("POST", shot.path, json=body)
            task = asyncio.create_task(c.send(request, stream=True))
            await wait_until(lambda: _sent_upstream(sim, shot.request_id), timeout=15)
            task.cancel()
            try:
                response = await task
            except asyncio.CancelledError:
                return
            await response.aclose()
            pytest.fail(f"answered before the first token: {response.status_code} {where}")
        cut_at = rng.randint(1, 8)
        async with c.stream("POST", shot.path, json=body) as r:
            shot.status = r.status_code
            lines = r.aiter_lines()  # kept: a dropped iterator would close the response
            async for line in lines:
                if _is_content(line):
                    shot.content_events += 1
                    if shot.mode == "mid" and shot.content_events >= cut_at:
                        return  # closes the connection mid-stream
                if line == "data: [DONE]":
                    shot.saw_done = True
                    if shot.mode == "after_done":
                        return  # closes the connection at once, as browsers do


async def _reset_in_body(base: str, headers: dict[str, str], path: str, body: bytes) -> None:
    """Send the headers and part of the body, then reset the connection (RST)."""
    host, port = base.removeprefix("http://").split(":")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{lines}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _counter(gw: LiveGateway, redis_url: str | None, name: str, user_id: int) -> int:
    limiter = gw.app.state.rate_limiter
    keys = dict(zip(("rpm", "streams", "tokens"), limiter._keys(user_id), strict=True))
    if redis_url is None:
        return int(limiter._memory._get(keys[name]))
    client = Redis.from_url(redis_url)
    try:
        return int(await client.get(keys[name]) or 0)
    finally:
        await client.aclose()


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory", "redis"])
async def test_chaos_cuts_lose_nothing(
    database_url: str, tmp_path: Path, simulator: Any, with_redis: bool, redis_prefix: str
) -> None:
    store = database_url.split(":", 1)[0].split("+")[0]
    if with_redis and store == "sqlite":
        pytest.skip("Redis is run with Postgres only (the production pairing)")
    prefix = redis_prefix
    redis_url = SHARED_REDIS if with_redis else None
    settings = make_settings(
        database_url,
        tmp_path,
        vllm_base_url=f"{simulator.url}/v1",
        title_generation=False,
        redis_url=redis_url,
        rate_limit_key_prefix=prefix,
        rate_limit_requests_per_minute=0,
        rate_limit_concurrent_streams=PARALLEL * 2,
        rate_limit_tokens_per_day=10**9,  # on, never reached: reservations are settled
    )
    await empty_tables(database_url, settings)
    await sim_post(simulator, "/sim/reset", {"config": True})
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    shots = []
    for i in range(REQUESTS):
        mode = MODES[i % len(MODES)] if i < len(MODES) * 2 else rng.choice(MODES)
        path = "/api/chat" if rng.random() < 0.5 else "/v1/chat/completions"
        rid = f"chaos-{i}-{uuid.uuid4().hex[:8]}"
        shots.append(Shot(i, path, mode, rid, f"Question {i} {mode} {ASKS[mode]}"))
    loop = asyncio.get_running_loop()
    async with LiveGateway(create_app(settings), free_port()) as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
            user_id = (await c.get("/api/auth/me", headers=bearer(token))).json()["id"]
        gate = asyncio.Semaphore(PARALLEL)

        async def one(shot: Shot) -> None:
            async with gate:
                await _fire(gw.url, token, simulator, shot, rng)

        started = loop.time()
        await asyncio.gather(*(one(s) for s in shots))
        elapsed = loop.time() - started

        async def settled() -> dict[str, Any] | None:
            stats = await sim_get(simulator, "/sim/stats")
            return stats if stats["active_requests"] == 0 else None

        stats = await wait_until(settled, timeout=15)
        recorder = gw.app.state.usage_recorder

        async def all_rows() -> list[RequestLog]:
            await recorder.flush()
            async with gw.app.state.session_factory() as session:
                rows = list((await session.execute(select(RequestLog))).scalars())
            return rows if len(rows) >= len(shots) else []

        rows = await wait_until(all_rows, timeout=15)
        await asyncio.sleep(0.3)  # nothing more arrives
        rows = await all_rows()
        await gw.app.state.chat_writer.flush()
        async with gw.app.state.session_factory() as session:
            messages = list((await session.execute(select(Message))).scalars())
        streams_open = await _counter(gw, redis_url, "streams", user_id)
        tokens_held = await _counter(gw, redis_url, "tokens", user_id)

    cuts = Counter(s.mode for s in shots)
    cut_before_end = cuts["before_first"] + cuts["mid"]
    label = store + ("+redis" if with_redis else "")
    print(
        f"\nchaos[{label}] seed={seed} requests={len(shots)} "
        f"cuts: in_body={cuts['body_reset']} before_first={cuts['before_first']} mid={cuts['mid']} "
        f"after_done={cuts['after_done']} (read to end: {cuts['full']}) "
        f"upstream_aborts={stats['aborted_total']} usage_rows={len(rows)} "
        f"messages={len(messages)} in {elapsed:.1f}s"
    )
    assert len(rows) == len(shots)
    by_id = {row.request_id: row for row in rows}
    assert len(by_id) == len(shots)
    by_conversation: dict[str | None, list[Message]] = {}
    for m in messages:
        by_conversation.setdefault(m.conversation_id, []).append(m)
    for shot in shots:
        row = by_id[shot.request_id]
        where = f"{shot.mode} {shot.path} {shot.request_id}"
        if shot.mode in ("body_reset", "before_first", "mid"):
            assert (row.status_code, row.error_code) == (499, "client_closed"), where
        else:
            assert shot.saw_done and (row.status_code, row.error_code) == (200, None), where
        if shot.mode == "body_reset":  # the question never arrived whole: nothing to store
            assert row.conversation_id is None and row.completion_tokens is None, where
            continue
        if shot.mode != "before_first":  # output was relayed: tokens are recorded
            assert row.completion_tokens and row.completion_tokens >= shot.content_events, where
            source = "gateway" if shot.mode == "mid" else "upstream"
            assert row.tokens_source == source, where
        if shot.path == "/api/chat":
            stored = by_conversation.get(row.conversation_id, [])
            users = [m for m in stored if m.role == "user"]
            answers = [m for m in stored if m.role == "assistant"]
            assert len(users) == 1 and users[0].content == shot.question, where
            if shot.mode == "before_first":
                assert answers == [], where
            else:
                expected = "partial" if shot.mode == "mid" else "complete"
                assert [a.status for a in answers] == [expected], where
    # every stream slot is back; the day's counter holds exactly the tokens recorded (no
    # reservation left behind)
    assert streams_open == 0
    assert stats["aborted_total"] == cut_before_end
    assert tokens_held == sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in rows)
