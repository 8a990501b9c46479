"""A scripted model server for the tests: `/v1/models` lists one model, `POST
/v1/chat/completions` is the test's own handler (an answer the simulator cannot give)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from tests.ports import free_port

ChatHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def model_server(model_id: str, chat: ChatHandler) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 while the block runs; yields the `/v1` base URL (VLLM_BASE_URL)."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model_id}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
