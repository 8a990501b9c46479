"""Garbage-collector pressure on the hot path (issue 17): a relayed request leaves no reference
cycle behind, and the served process freezes its start-up heap.

Before: the app kept the server's `send` (a method of uvicorn's request object, which holds the
scope) in the scope, so every request left ~15 objects in a cycle; with a large start-up heap,
the full collections they triggered stopped the event loop ~100 ms at a time (the p99 of the
benchmark's streams went from ~16 ms to ~120 ms)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager

from app.main import GC_YOUNG_THRESHOLD, create_app
from tests.conftest import empty_tables, login, make_settings, read_sse


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
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
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
            gc.collect()
            kinds = {type(o).__name__ for o in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
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
