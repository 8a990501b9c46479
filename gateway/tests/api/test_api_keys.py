"""API keys: shown once, stored hashed, usable as a bearer credential, revocable, owned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from app.core.security import hash_api_key
from app.db.models import ApiKey
from tests.conftest import assert_error, bearer


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "ci"
) -> dict[str, object]:
    r = await client.post("/api/auth/keys", headers=headers, json={"name": name})
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


class TestApiKeys:
    async def test_key_authenticates_and_is_hashed_at_rest(
        self, client: httpx.AsyncClient, app, user_headers
    ) -> None:  # type: ignore[no-untyped-def]
        created = await _create(client, user_headers)
        key = str(created["key"])
        assert key.startswith("sk-") and len(key) > 40
        assert created["prefix"] == key[:10]
        me = await client.get("/api/auth/me", headers=bearer(key))
        assert me.status_code == 200 and me.json()["username"] == "test"
        async with app.state.session_factory() as session:
            stored = (await session.execute(select(ApiKey))).scalar_one()
        assert stored.key_hash == hash_api_key(key)
        assert key not in (stored.key_hash, stored.prefix, stored.name)
        assert stored.last_used_at is not None

    async def test_list_never_shows_the_secret(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        created = await _create(client, user_headers)
        r = await client.get("/api/auth/keys", headers=user_headers)
        assert r.status_code == 200
        keys = r.json()["keys"]
        assert [k["id"] for k in keys] == [created["id"]]
        assert "key" not in keys[0] and str(created["key"]) not in r.text

    async def test_revoked_key_is_refused(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        created = await _create(client, user_headers)
        r = await client.delete(f"/api/auth/keys/{created['id']}", headers=user_headers)
        assert r.status_code == 204
        assert_error(
            await client.get("/api/auth/me", headers=bearer(str(created["key"]))),
            401,
            "invalid_api_key",
        )

    async def test_expired_key_is_refused(
        self, client: httpx.AsyncClient, app, user_headers
    ) -> None:  # type: ignore[no-untyped-def]
        created = await _create(client, user_headers)
        async with app.state.session_factory.begin() as session:
            await session.execute(
                update(ApiKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert_error(
            await client.get("/api/auth/me", headers=bearer(str(created["key"]))),
            401,
            "invalid_api_key",
        )

    async def test_unknown_key_is_refused(self, client: httpx.AsyncClient) -> None:
        assert_error(
            await client.get("/api/auth/me", headers=bearer("sk-" + "a" * 43)),
            401,
            "invalid_api_key",
        )

    async def test_another_users_key_is_not_found(
        self, client: httpx.AsyncClient, user_headers, admin_headers
    ) -> None:  # type: ignore[no-untyped-def]
        created = await _create(client, admin_headers, "admin-key")
        assert_error(
            await client.delete(f"/api/auth/keys/{created['id']}", headers=user_headers),
            404,
            "not_found",
        )
        assert (
            await client.get("/api/auth/me", headers=bearer(str(created["key"])))
        ).status_code == 200

    async def test_invalid_create(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        for body in ({"name": ""}, {"name": "x", "expires_in_days": 0}, {}):
            assert_error(await client.post("/api/auth/keys", headers=user_headers, json=body), 422)

    async def test_key_with_expiry(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/auth/keys", headers=user_headers, json={"name": "week", "expires_in_days": 7}
        )
        expires = datetime.fromisoformat(r.json()["expires_at"])
        assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
