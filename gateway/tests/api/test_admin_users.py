"""/api/admin/users: role checks and user management."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import assert_error, bearer, login

ROUTES = [
    ("GET", "/api/admin/users", None),
    ("POST", "/api/admin/users", {"username": "someone", "password": "password1"}),
    ("PATCH", "/api/admin/users/1", {"disabled": True}),
    ("DELETE", "/api/admin/users/1", None),
]


class TestAccess:
    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_anonymous(
        self, client: httpx.AsyncClient, method: str, path: str, body: object
    ) -> None:
        assert_error(await client.request(method, path, json=body), 401, "unauthorized")

    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_forbidden_for_user_role(
        self,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        method: str,
        path: str,
        body: object,
    ) -> None:
        r = await client.request(method, path, json=body, headers=user_headers)
        assert_error(r, 403, "forbidden")


class TestManageUsers:
    async def test_list(self, client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
        r = await client.get("/api/admin/users", headers=admin_headers)
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 2
        assert [u["username"] for u in body["users"]] == ["admin", "test"]
        assert all("password_hash" not in u for u in body["users"])

    async def test_create_then_login(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/admin/users",
            headers=admin_headers,
            json={
                "username": "alice",
                "email": "alice@example.org",
                "password": "wonderland",
                "role": "user",
                "requests_per_minute": 30,
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["username"] == "alice" and created["requests_per_minute"] == 30
        token = await login(client, "alice", "wonderland")
        me = await client.get("/api/auth/me", headers=bearer(token))
        assert me.json()["id"] == created["id"]

    @pytest.mark.parametrize(
        "body",
        [
            {"username": "admin", "password": "whatever1"},
            # a look-alike of an existing account is a duplicate too
            {"username": "Admin", "password": "whatever1"},
            {"username": "ADMIN", "password": "whatever1"},
            {"username": "other", "email": "ADMIN@example.com", "password": "whatever1"},
        ],
    )
    async def test_duplicate_is_409(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, str]
    ) -> None:
        assert_error(
            await client.post("/api/admin/users", headers=admin_headers, json=body), 409, "conflict"
        )

    @pytest.mark.parametrize(
        "body",
        [
            {"username": "ab", "password": "password1"},
            {"username": "bad name!", "password": "password1"},
            {"username": "bob", "password": "short"},
            {"username": "bob", "password": "é" * 40},
            {"username": "bob", "password": "password1", "role": "root"},
            {"username": "bob", "password": "password1", "email": "not-an-email"},
            {"username": "bob", "password": "password1", "requests_per_minute": -1},
            {"username": "bob", "password": "password1", "unexpected": 1},
        ],
    )
    async def test_invalid_create_is_422(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, object]
    ) -> None:
        assert_error(
            await client.post("/api/admin/users", headers=admin_headers, json=body),
            422,
            "validation_error",
        )

    async def test_patch_role_limits_and_disable(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        users = (await client.get("/api/admin/users", headers=admin_headers)).json()["users"]
        test_id = next(u["id"] for u in users if u["username"] == "test")
        old_token = await login(client, "test", "test")
        r = await client.patch(
            f"/api/admin/users/{test_id}",
            headers=admin_headers,
            json={"role": "admin", "max_concurrent_streams": 2, "tokens_per_day": 1000},
        )
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "admin" and r.json()["max_concurrent_streams"] == 2
        # a role change revokes tokens that carry the old role
        assert_error(
            await client.get("/api/auth/me", headers=bearer(old_token)), 401, "invalid_token"
        )
        r = await client.patch(
            f"/api/admin/users/{test_id}",
            headers=admin_headers,
            json={"tokens_per_day": None, "disabled": True},
        )
        assert r.json()["tokens_per_day"] is None and r.json()["disabled"] is True
        blocked = await client.post(
            "/api/auth/login", json={"username": "test", "password": "test"}
        )
        assert_error(blocked, 403, "account_disabled")

    async def test_admin_sets_password(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        users = (await client.get("/api/admin/users", headers=admin_headers)).json()["users"]
        test_id = next(u["id"] for u in users if u["username"] == "test")
        r = await client.patch(
            f"/api/admin/users/{test_id}",
            headers=admin_headers,
            json={"password": "brand-new-pass"},
        )
        assert r.status_code == 200
        assert (
            await client.post("/api/auth/login", json={"username": "test", "password": "test"})
        ).status_code == 401
        await login(client, "test", "brand-new-pass")

    async def test_last_admin_cannot_lose_admin(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        me = (await client.get("/api/auth/me", headers=admin_headers)).json()
        for change in ({"role": "user"}, {"disabled": True}):
            r = await client.patch(
                f"/api/admin/users/{me['id']}", headers=admin_headers, json=change
            )
            assert_error(r, 409, "conflict")
        assert_error(
            await client.delete(f"/api/admin/users/{me['id']}", headers=admin_headers), 409
        )

    async def test_delete_user(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        users = (await client.get("/api/admin/users", headers=admin_headers)).json()["users"]
        test_id = next(u["id"] for u in users if u["username"] == "test")
        assert (
            await client.delete(f"/api/admin/users/{test_id}", headers=admin_headers)
        ).status_code == 204
        assert (await client.get("/api/admin/users", headers=admin_headers)).json()["total"] == 1
        assert_error(
            await client.delete(f"/api/admin/users/{test_id}", headers=admin_headers),
            404,
            "not_found",
        )

    @pytest.mark.parametrize("path", ["/api/admin/users/999999", "/api/admin/users/abc"])
    async def test_unknown_or_malformed_id(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], path: str
    ) -> None:
        r = await client.patch(path, headers=admin_headers, json={"disabled": False})
        assert r.status_code in (404, 422)
        assert_error(r, r.status_code)
