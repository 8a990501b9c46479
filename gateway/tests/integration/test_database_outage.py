"""Postgres becomes unreachable under a running gateway, then comes back.

The gateway reaches the real Postgres through a TCP proxy that the test can cut: a real outage
as the gateway sees it (connections reset, new ones refused), without touching the shared server.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from app.db.engine import create_engine
from app.db.models import RequestLog
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


async def test_recent_principals_ride_out_an_outage_and_refusals_get_usage_rows(  # type: ignore[no-untyped-def]
    proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path, simulator
) -> None:
    """Issue 12 defect 11: during a Postgres cut a credential resolved moments ago is still
    served (AUTH_OUTAGE_GRACE_S) where nothing else needs the database (/v1 chat); a credential
    not seen before, and /api/chat (which stores the conversation), get 503
    database_unavailable; every one of these requests gets its usage row once Postgres is back."""
    direct, url, proxy = proxied_postgres
    settings = make_settings(
        url,
        tmp_path,
        db_timeout_s=1.0,
        health_probe_timeout_s=1.5,
        vllm_base_url=f"{simulator.url}/v1",
        auth_cache_ttl_s=0.2,
        auth_outage_grace_s=30,
        title_generation=False,
    )
    chat = {"model": "current", "messages": [{"role": "user", "content": "hi"}]}
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            token = await login(client, "test", "test")
            unseen = await login(client, "admin", "admin123")  # never resolved before the cut
            r = await client.post("/v1/chat/completions", json=chat, headers=bearer(token))
            assert r.status_code == 200, r.text
            cache = app.state.principal_cache

            await proxy.stop()
            # past its TTL: only the outage grace can serve it now
            await wait_until(lambda: cache.get(token) is None, timeout=5)

            r = await client.post("/v1/chat/completions", json=chat, headers=bearer(token))
            assert r.status_code == 200, r.text
            assert cache.served_in_outage >= 1
            r = await client.post("/api/chat", json=chat, headers=bearer(token))
            assert_error(r, 503, "database_unavailable")
            r = await client.post("/v1/chat/completions", json=chat, headers=bearer(unseen))
            assert_error(r, 503, "database_unavailable")

            await proxy.start()
            engine = create_engine(settings, direct)
            try:

                async def rows() -> list[tuple[int | None, int, str | None, str]]:
                    async with engine.connect() as conn:
                        result = await conn.execute(
                            select(
                                RequestLog.user_id,
                                RequestLog.status_code,
                                RequestLog.error_code,
                                RequestLog.client,
                            ).order_by(RequestLog.id)
                        )
                        return [tuple(row) for row in result]  # type: ignore[misc]

                async def all_written() -> bool:
                    try:
                        return len(await rows()) == 4
                    except Exception:
                        return False

                await wait_until(all_written, timeout=20)
                test_id = (await client.get("/api/auth/me", headers=bearer(token))).json()["id"]
                assert await rows() == [
                    (test_id, 200, None, "api"),
                    (test_id, 200, None, "api"),
                    (test_id, 503, "database_unavailable", "ui"),
                    (None, 503, "database_unavailable", "api"),
                ]
            finally:
                await engine.dispose()


async def test_without_grace_an_outage_refuses_at_once(
    proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path
) -> None:
    _, url, proxy = proxied_postgres
    settings = make_settings(
        url, tmp_path, db_timeout_s=1.0, auth_cache_ttl_s=0.2, auth_outage_grace_s=0
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            token = await login(client, "test", "test")
            assert (await client.get("/api/auth/verify", headers=bearer(token))).status_code == 200
            await proxy.stop()
            cache = app.state.principal_cache
            await wait_until(lambda: cache.get(token, outage=True) is None, timeout=5)
            r = await client.get("/api/auth/verify", headers=bearer(token))
            assert_error(r, 503, "database_unavailable")
