"""Password changes and development mode."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import assert_error, bearer, empty_tables, login, make_settings


class TestChangePassword:
    async def test_success_revokes_old_tokens(self, client: httpx.AsyncClient) -> None:
        old = await login(client, "test", "test")
        r = await client.post(
            "/api/auth/change-password",
            headers=bearer(old),
            json={"current_password": "test", "new_password": "a-better-password"},
        )
        assert r.status_code == 200, r.text
        fresh = r.json()["access_token"]
        assert_error(await client.get("/api/auth/me", headers=bearer(old)), 401, "invalid_token")
        assert (await client.get("/api/auth/me", headers=bearer(fresh))).status_code == 200
        assert (
            await client.post("/api/auth/login", json={"username": "test", "password": "test"})
        ).status_code == 401
        await login(client, "test", "a-better-password")

    async def test_wrong_current_password(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/auth/change-password",
            headers=user_headers,
            json={"current_password": "nope", "new_password": "a-better-password"},
        )
        assert_error(r, 422, "invalid_credentials")
        await login(client, "test", "test")

    async def test_weak_or_too_long_new_password(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        for new in ("short", "x" * 73, "가" * 25):  # 75 bytes of UTF-8 is over bcrypt's 72
            r = await client.post(
                "/api/auth/change-password",
                headers=user_headers,
                json={"current_password": "test", "new_password": new},
            )
            assert_error(r, 422, "validation_error")

    async def test_anonymous(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/api/auth/change-password", json={"current_password": "a", "new_password": "bbbbbbbbb"}
        )
        assert_error(r, 401)


class TestDevelopmentMode:
    async def test_no_token_acts_as_admin_but_tokens_still_count(
        self, database_url: str, tmp_path: Path
    ) -> None:
        settings = make_settings(database_url, tmp_path, development_mode=True)
        await empty_tables(database_url, settings)
        app = create_app(settings)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.get("/api/auth/verify")
                assert r.status_code == 200 and r.json()["username"] == "admin"
                assert (await client.get("/api/admin/users")).status_code == 200
                token = await login(client, "test", "test")
                r = await client.get("/api/auth/verify", headers=bearer(token))
                assert r.json()["username"] == "test"
                assert_error(await client.get("/api/auth/me", headers=bearer("bad")), 401)

    async def test_off_by_default(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/api/auth/verify"), 401)
