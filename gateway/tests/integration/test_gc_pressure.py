"""Garbage-collector pressure on the hot path (issue 17): a relayed request leaves no reference
cycle behind, and the served process freezes its start-up heap.

Before: the app kept the server's `send` (a method of uvicorn's request object, which holds the
scope) in the scope, so every request left ~15 objects in a cycle; with a large start-up heap,
the full collections they triggered stopped the event loop ~100 ms at a time (the p99 of the
benchmark's streams went from ~16 ms to ~120 ms)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager

from app.main import GC_YOUNG_THRESHOLD, create_app
from tests.conftest import empty_tables, login, make_settings, read_sse


@contextmanager
def _garbage() -> Iterator[set[str]]:
    """The kinds of object that only the cycle collector freed while the block ran (filled in
    when it ends): garbage collection off meanwhile, every collected object kept to look at."""
    kinds: set[str] = set()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield kinds
        gc.collect()
        kinds.update(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_relayed_requests_leave_no_reference_cycles(start_gateway: Any) -> None:
    async with start_gateway() as gw, gw.client() as c:
        token = await login(c, "test", "test")
        body = {"model": "current", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        for path in ("/v1/chat/completions", "/api/chat"):  # warm-up: caches, pools, models
            async with c.stream(
                "POST", path, json=body, headers={"authorization": f"Bearer {token}"}
            ) as r:
                assert r.status_code == 200
                await read_sse(r)
        with _garbage() as kinds:
            for _ in range(10):
                async with c.stream(
                    "POST",
                    "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status_code == 200
                    events = await read_sse(r)
                    assert events[-1] == "[DONE]"
    assert "RequestResponseCycle" not in kinds, kinds


async def test_the_served_process_freezes_its_start_up_heap(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, gc_freeze=True)
    await empty_tables(database_url, settings)
    threshold = gc.get_threshold()
    try:
        async with LifespanManager(create_app(settings), startup_timeout=30):
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_an_error_event_in_the_first_read_leaves_no_reference_cycle(
    start_gateway: Any,
) -> None:
    """The model server's error event arrives with the first events: the client gets the head,
    the error event and [DONE]; the exception is not kept where it makes a cycle (frame ->
    local -> exception -> traceback -> frame) for the collector to find."""
    from aiohttp import web

    from tests.model_server import model_server

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        error = {"error": {"message": "out of memory", "type": "InternalServerError"}}
        await resp.write(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
        return resp

    body = {"model": "failing", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with model_server("failing", chat) as url, start_gateway(vllm_base_url=url) as gw:
        async with gw.client() as c:
            token = await login(c, "test", "test")
        headers = {"authorization": f"Bearer {token}"}
        async with gw.client() as c:

            async def one() -> list[str]:
                async with c.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as r:
                    assert r.status_code == 200
                    return await read_sse(r)

            await one()  # warm-up
            with _garbage() as kinds:
                for _ in range(5):
                    events = await one()
                    assert events[-1] == "[DONE]" and "error" in events[-2]
    assert "UpstreamError" not in kinds, kinds
