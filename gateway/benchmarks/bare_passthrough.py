"""The floor to compare with: a bare FastAPI + aiohttp streaming passthrough, no auth, no
validation, no usage, no logging (the "for scale" figure of issue 3).

    UPSTREAM=http://127.0.0.1:8000 uvicorn benchmarks.bare_passthrough:app --port 8081
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8000").rstrip("/")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    yield
    await app.state.http.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/chat/completions")
async def relay(request: Request) -> StreamingResponse:
    http: aiohttp.ClientSession = request.app.state.http
    upstream = await http.post(
        f"{UPSTREAM}/v1/chat/completions",
        data=await request.body(),
        headers={"Content-Type": "application/json"},
    )

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        finally:
            upstream.release()

    return StreamingResponse(body(), media_type="text/event-stream")
