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
        me = await client.get("/api/auth/verify", headers=bearer(key))
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
            await client.get("/api/auth/verify", headers=bearer(str(created["key"]))),
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
            await client.get("/api/auth/verify", headers=bearer(str(created["key"]))),
            401,
            "invalid_api_key",
        )

    async def test_unknown_key_is_refused(self, client: httpx.AsyncClient) -> None:
        assert_error(
            await client.get("/api/auth/verify", headers=bearer("sk-" + "a" * 43)),
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
            await client.get("/api/auth/verify", headers=bearer(str(created["key"])))
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


async def _key(
    client: httpx.AsyncClient, headers: dict[str, str], scope: str | None = None
) -> tuple[int, dict[str, str]]:
    body: dict[str, object] = {"name": f"key-{scope}"}
    if scope is not None:
        body["scope"] = scope
    r = await client.post("/api/auth/keys", headers=headers, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["scope"] == (scope or "chat")
    return int(r.json()["id"]), bearer(str(r.json()["key"]))


class TestKeyScopesAndRevocation:
    """Issue 12 defect 8: a key could mint a key (which outlived the first's revocation), a
    password change left every key alive, and an admin's key could do all an admin can."""

    async def test_keys_are_managed_with_a_password_login_only(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        first_id, full = await _key(client, user_headers, "full")
        _, chat = await _key(client, user_headers)
        for key, code in ((full, "password_login_required"), (chat, "insufficient_scope")):
            assert_error(
                await client.post("/api/auth/keys", headers=key, json={"name": "minted"}),
                403,
                code,
            )
            assert_error(await client.get("/api/auth/keys", headers=key), 403, code)
            assert_error(await client.delete(f"/api/auth/keys/{first_id}", headers=key), 403, code)
        keys = (await client.get("/api/auth/keys", headers=user_headers)).json()["keys"]
        assert len(keys) == 2 and all(k["revoked_at"] is None for k in keys)
        r = await client.delete(f"/api/auth/keys/{first_id}", headers=user_headers)
        assert r.status_code == 204
        assert_error(await client.get("/api/auth/verify", headers=full), 401, "invalid_api_key")

    async def test_chat_scope_reaches_chat_and_models_only(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        _, chat = await _key(client, user_headers)
        assert (await client.get("/api/auth/verify", headers=chat)).json()["username"] == "test"
        chat_body = {"messages": [{"role": "user", "content": "hi"}]}
        # allowed (no model server in these tests, so not necessarily 200), never 401/403
        for method, path, body in (
            ("POST", "/api/chat", chat_body),
            ("POST", "/v1/chat/completions", chat_body),
            ("GET", "/v1/models", None),
            ("GET", "/api/models", None),
        ):
            r = await client.request(method, path, headers=chat, json=body)
            assert r.status_code not in (401, 403), (path, r.text)
        for method, path in (
            ("GET", "/api/auth/me"),
            ("POST", "/api/auth/change-password"),
            ("GET", "/api/conversations"),
            ("GET", "/api/usage"),
            ("GET", "/api/users/me/settings"),
            ("GET", "/api/models/status"),
        ):
            r = await client.request(method, path, headers=chat, json={})
            assert_error(r, 403, "insufficient_scope")
        _, full = await _key(client, user_headers, "full")
        assert (await client.get("/api/auth/me", headers=full)).status_code == 200
        assert (await client.get("/api/conversations", headers=full)).status_code == 200

    async def test_admin_chat_key_cannot_administer_a_full_key_can(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        _, chat = await _key(client, admin_headers)
        new_admin = {"username": "eve", "password": "long-password-1", "role": "admin"}
        assert_error(
            await client.post("/api/admin/users", headers=chat, json=new_admin),
            403,
            "insufficient_scope",
        )
        assert_error(await client.get("/api/admin/users", headers=chat), 403, "insufficient_scope")
        assert_error(
            await client.patch("/api/admin/users/1", headers=chat, json={"disabled": True}),
            403,
            "insufficient_scope",
        )
        assert_error(
            await client.post("/api/models/switch", headers=chat, json={"profile_id": "x"}),
            403,
            "insufficient_scope",
        )
        assert_error(
            await client.post("/api/models/reload", headers=chat), 403, "insufficient_scope"
        )
        _, full = await _key(client, admin_headers, "full")
        r = await client.post("/api/admin/users", headers=full, json=new_admin)
        assert r.status_code == 201, r.text

    async def test_invalid_scope_is_refused(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        for scope in ("admin", "", None, 1):
            r = await client.post(
                "/api/auth/keys", headers=user_headers, json={"name": "x", "scope": scope}
            )
            assert_error(r, 422)

    async def test_password_change_revokes_every_key(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        _, chat = await _key(client, user_headers)
        _, full = await _key(client, user_headers, "full")
        r = await client.post(
            "/api/auth/change-password",
            headers=full,  # even through one of the keys themselves
            json={"current_password": "test", "new_password": "a-new-password"},
        )
        assert r.status_code == 200, r.text
        for key in (chat, full):
            assert_error(await client.get("/api/auth/verify", headers=key), 401, "invalid_api_key")
        token = bearer(r.json()["access_token"])
        keys = (await client.get("/api/auth/keys", headers=token)).json()["keys"]
        assert len(keys) == 2 and all(k["revoked_at"] is not None for k in keys)
        _, fresh = await _key(client, token)
        assert (await client.get("/api/auth/verify", headers=fresh)).status_code == 200

    async def test_admin_password_reset_revokes_the_users_keys(
        self,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        admin_headers: dict[str, str],
    ) -> None:
        _, key = await _key(client, user_headers, "full")
        _, admin_key = await _key(client, admin_headers, "full")
        user_id = (await client.get("/api/auth/me", headers=user_headers)).json()["id"]
        r = await client.patch(
            f"/api/admin/users/{user_id}",
            headers=admin_headers,
            json={"password": "reset-by-admin-1"},
        )
        assert r.status_code == 200, r.text
        assert_error(await client.get("/api/auth/verify", headers=key), 401, "invalid_api_key")
        assert (await client.get("/api/auth/verify", headers=admin_key)).status_code == 200


async def test_chat_key_is_refused_on_every_other_route(
    client: httpx.AsyncClient, app, user_headers: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    """Deny by default: every API route of the app, with a chat key, is 403 unless it is on
    the chat allow-list (a route added later stays closed to chat keys until listed)."""
    from app.api.deps import CHAT_SCOPE_ROUTES

    _, chat = await _key(client, user_headers)
    checked = 0
    for template, operations in app.openapi()["paths"].items():
        if not template.startswith("/api/") or template == "/api/auth/login":
            continue  # the login takes no credential
        path = "/".join("1" if part.startswith("{") else part for part in template.split("/"))
        for method in operations:
            method = method.upper()
            r = await client.request(method, path, headers=chat, json={})
            if (method, template) in CHAT_SCOPE_ROUTES:
                assert r.status_code != 403, (method, template, r.text)
            else:
                assert_error(r, 403, "insufficient_scope")
                checked += 1
    assert checked >= 20
