"""Bearer token handling: verify/me, and every way a token can be bad."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from sqlalchemy import delete, select, update

from app.db.models import User
from tests.conftest import TEST_JWT_SECRET, assert_error, bearer, login


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _user_id(app, username: str) -> int:  # type: ignore[no-untyped-def]
    async with app.state.session_factory() as session:
        return int(
            (await session.execute(select(User.id).where(User.username == username))).scalar_one()
        )


def _claims(uid: int, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "admin",
        "uid": uid,
        "role": "admin",
        "ver": 0,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return claims


class TestVerifyAndMe:
    async def test_verify_returns_username_role_exp(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        r = await client.get("/api/auth/verify", headers=admin_headers)
        assert r.status_code == 200
        body = r.json()
        assert body["username"] == "admin" and body["role"] == "admin"
        assert body["exp"] > time.time()

    async def test_me_returns_profile_without_secrets(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.get("/api/auth/me", headers=user_headers)
        assert r.status_code == 200
        body = r.json()
        assert body["username"] == "test" and body["email"] == "test@example.com"
        assert body["role"] == "user" and body["disabled"] is False
        assert "password_hash" not in body and "password" not in r.text

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/auth/me")
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


class TestBadTokens:
    async def test_expired(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        uid = await _user_id(app, "admin")
        token = jwt.encode(
            _claims(uid, iat=int(time.time()) - 7200, exp=int(time.time()) - 60),
            TEST_JWT_SECRET,
            "HS256",
        )
        err = assert_error(
            await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token"
        )
        assert "expired" in err["message"]

    async def test_bad_signature(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        uid = await _user_id(app, "admin")
        token = jwt.encode(_claims(uid), "another-secret-" + "y" * 40, "HS256")
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_alg_none(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        uid = await _user_id(app, "admin")
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(uid))}."
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_other_algorithm_with_secret_as_key(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        uid = await _user_id(app, "admin")
        token = jwt.encode(_claims(uid), TEST_JWT_SECRET, "HS512")
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_tampered_role_claim(self, client: httpx.AsyncClient) -> None:
        token = await login(client, "test", "test")
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["role"] = "admin"
        forged = f"{header}.{_b64(claims)}.{signature}"
        assert_error(
            await client.get("/api/admin/users", headers=bearer(forged)), 401, "invalid_token"
        )

    async def test_missing_claims(self, client: httpx.AsyncClient) -> None:
        token = jwt.encode({"sub": "admin", "exp": int(time.time()) + 60}, TEST_JWT_SECRET, "HS256")
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_token_for_deleted_user(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        token = await login(client, "test", "test")
        async with app.state.session_factory.begin() as session:
            await session.execute(delete(User).where(User.username == "test"))
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_token_for_recreated_username_is_refused(
        self, client: httpx.AsyncClient, app, admin_headers
    ) -> None:  # type: ignore[no-untyped-def]
        token = await login(client, "test", "test")
        async with app.state.session_factory.begin() as session:
            await session.execute(delete(User).where(User.username == "test"))
        r = await client.post(
            "/api/admin/users",
            headers=admin_headers,
            json={"username": "test", "password": "another-pass"},
        )
        assert r.status_code == 201
        assert_error(await client.get("/api/auth/me", headers=bearer(token)), 401, "invalid_token")

    async def test_token_for_disabled_user(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        token = await login(client, "test", "test")
        async with app.state.session_factory.begin() as session:
            await session.execute(update(User).where(User.username == "test").values(disabled=True))
        assert_error(
            await client.get("/api/auth/me", headers=bearer(token)), 401, "account_disabled"
        )

    @pytest.mark.parametrize(
        "header",
        [
            "garbage",
            "Bearer",
            "Bearer ",
            "Basic YWRtaW46YWRtaW4xMjM=",
            "Bearer a b",
            "Bearer not.a.jwt",
            "Bearer " + "A" * 5000,
            "Bearer eyJhbGciOiJIUzI1NiJ9.%%%.###",
        ],
    )
    async def test_garbage_authorization_header(
        self, client: httpx.AsyncClient, header: str
    ) -> None:
        r = await client.get("/api/auth/me", headers={"Authorization": header})
        assert_error(r, 401)
