"""Postgres becomes unreachable under a running gateway, then comes back.

The gateway reaches the real Postgres through a TCP proxy that the test can cut: a real outage
as the gateway sees it (connections reset, new ones refused), without touching the shared server.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import assert_error, bearer, login, make_settings, wait_until
from tests.tcp_proxy import TcpProxy


async def test_outage_gives_503_bodies_and_recovers(
    proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path
) -> None:
    _, url, proxy = proxied_postgres
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
