"""Postgres becomes unreachable under a running gateway, then comes back.

The gateway reaches the real Postgres through a TCP proxy that the test can cut: a real outage
as the gateway sees it (connections reset, new ones refused), without touching the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import (
    REQUIRE_POSTGRES,
    _postgres_available,
    assert_error,
    bearer,
    create_pg_database,
    drop_pg_database,
    free_port,
    login,
    make_settings,
    wait_until,
)


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def proxied_url() -> AsyncIterator[tuple[str, TcpProxy]]:
    if not _postgres_available():
        if REQUIRE_POSTGRES:
            pytest.fail("Postgres at 127.0.0.1:5432 is required in CI but is not reachable")
        pytest.skip("Postgres at 127.0.0.1:5432 not reachable")
    url = await create_pg_database("gw_outage")
    proxy = TcpProxy(5432)
    await proxy.start()
    try:
        yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    finally:
        if proxy._server is not None:
            await proxy.stop()
        await drop_pg_database(url)


async def test_outage_gives_503_bodies_and_recovers(
    proxied_url: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    url, proxy = proxied_url
    settings = make_settings(url, tmp_path, db_timeout_s=1.0, health_probe_timeout_s=1.5)
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            token = await login(client, "admin", "admin123")
            assert (await client.get("/health")).json()["services"]["database"]["status"] == "up"

            await proxy.stop()

            health = await client.get("/health")
            assert health.status_code == 503
            body = health.json()
            assert body["status"] == "unhealthy"
            assert body["services"]["database"]["status"] == "down"
            assert (await client.get("/health/ready")).status_code == 503
            assert (await client.get("/health/live")).status_code == 200

            r = await client.post(
                "/api/auth/login", json={"username": "admin", "password": "admin123"}
            )
            assert_error(r, 503, "database_unavailable")
            assert r.headers["retry-after"] == "5"
            assert_error(
                await client.get("/api/auth/me", headers=bearer(token)), 503, "database_unavailable"
            )

            await proxy.start()

            async def database_up() -> bool:
                r = await client.get("/health")
                return r.status_code == 200 and r.json()["services"]["database"]["status"] == "up"

            await wait_until(database_up, timeout=15)
            assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
            await login(client, "test", "test")
