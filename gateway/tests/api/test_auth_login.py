"""POST /api/auth/login: success, every failure, throttling, malformed and oversized bodies."""

from __future__ import annotations

import httpx
import jwt
from sqlalchemy import update

from app.db.models import User
from tests.conftest import TEST_JWT_SECRET, assert_error


class TestLoginSuccess:
    async def test_returns_bearer_token_with_claims(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/login", json={"username": "admin", "password": "admin123"}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 30 * 60
        claims = jwt.decode(body["access_token"], TEST_JWT_SECRET, algorithms=["HS256"])
        assert claims["sub"] == "admin"
        assert claims["role"] == "admin"
        assert claims["exp"] - claims["iat"] == 30 * 60

    async def test_email_works_as_username(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/login", json={"username": "Test@Example.com", "password": "test"}
        )
        assert response.status_code == 200
        claims = jwt.decode(response.json()["access_token"], TEST_JWT_SECRET, ["HS256"])
        assert claims["sub"] == "test" and claims["role"] == "user"


class TestLoginFailures:
    async def test_unknown_user_and_wrong_password_look_the_same(
        self, client: httpx.AsyncClient
    ) -> None:
        unknown = await client.post(
            "/api/auth/login", json={"username": "nobody", "password": "admin123"}
        )
        wrong = await client.post(
            "/api/auth/login", json={"username": "admin", "password": "wrong"}
        )
        err_unknown = assert_error(unknown, 401, "invalid_credentials")
        err_wrong = assert_error(wrong, 401, "invalid_credentials")
        assert err_unknown["message"] == err_wrong["message"]
        assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")

    async def test_disabled_user_is_refused(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        async with app.state.session_factory.begin() as session:
            await session.execute(update(User).where(User.username == "test").values(disabled=True))
        response = await client.post(
            "/api/auth/login", json={"username": "test", "password": "test"}
        )
        assert_error(response, 403, "account_disabled")

    async def test_malformed_json(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/login",
            content=b'{"username": "admin", "password": ',
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 422, "invalid_json")

    async def test_wrong_types_and_missing_fields(self, client: httpx.AsyncClient) -> None:
        for body in (
            {"username": 123, "password": "admin123"},
            {"username": "admin"},
            {"username": "", "password": "x"},
            ["admin", "admin123"],
            {"username": {"$ne": None}, "password": "x"},
        ):
            response = await client.post("/api/auth/login", json=body)
            err = assert_error(response, 422, "validation_error")
            assert err["details"], err

    async def test_oversized_body_is_413_before_reading(self, client: httpx.AsyncClient) -> None:
        big = b'{"username": "admin", "password": "' + b"x" * (3 * 1024 * 1024) + b'"}'
        response = await client.post(
            "/api/auth/login", content=big, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")

    async def test_oversized_chunked_body_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"username": "admin", "password": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}'

        response = await client.post(
            "/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")


class TestLoginThrottle:
    async def test_failures_per_ip_are_throttled_with_retry_after(
        self, client: httpx.AsyncClient
    ) -> None:
        limit = 10  # settings.login_max_failures default
        for _ in range(limit):
            r = await client.post("/api/auth/login", json={"username": "admin", "password": "no"})
            assert r.status_code == 401
        blocked = await client.post(
            "/api/auth/login", json={"username": "admin", "password": "admin123"}
        )
        assert_error(blocked, 429, "rate_limited")
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert blocked.headers["x-ratelimit-limit"] == str(limit)
        assert blocked.headers["x-ratelimit-remaining"] == "0"
        assert blocked.headers["x-ratelimit-reset"] == blocked.headers["retry-after"]

    async def test_successful_logins_do_not_count(self, client: httpx.AsyncClient) -> None:
        for _ in range(12):
            r = await client.post("/api/auth/login", json={"username": "test", "password": "test"})
            assert r.status_code == 200

    async def test_other_ips_are_not_blocked(self, client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
        for _ in range(10):
            await client.post("/api/auth/login", json={"username": "admin", "password": "no"})
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 4000)),
            base_url="http://gateway.test",
        )
        async with other:
            r = await other.post(
                "/api/auth/login", json={"username": "admin", "password": "admin123"}
            )
        assert r.status_code == 200


class TestLoginForms:
    """Seed 003's k6 scripts post `{email, password}` (k6 sends an object as a form); OAuth2
    clients post the password form; the UI posts JSON `{username, password}`."""

    async def _claims(self, response: httpx.Response) -> dict[str, object]:
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "bearer"
        claims: dict[str, object] = jwt.decode(
            response.json()["access_token"], TEST_JWT_SECRET, ["HS256"]
        )
        return claims

    async def test_json_with_email(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/api/auth/login", json={"email": "test@example.com", "password": "test"}
        )
        assert (await self._claims(r))["sub"] == "test"
        same = {"username": "test@example.com", "email": "TEST@example.com", "password": "test"}
        assert (await self._claims(await client.post("/api/auth/login", json=same)))[
            "sub"
        ] == "test"

    async def test_form_bodies(self, client: httpx.AsyncClient) -> None:
        for form in (
            {"email": "test@example.com", "password": "test"},  # k6: http.post(url, {...})
            {"username": "test", "password": "test"},
            {"username": "test@example.com", "password": "test", "grant_type": "password"},
            {"username": "test", "password": "test", "scope": "", "client_id": "k6"},
        ):
            r = await client.post("/api/auth/login", data=form)
            assert (await self._claims(r))["sub"] == "test", form
        raw = await client.post(
            "/api/auth/login",
            content=b"username=admin&password=admin123",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        assert (await self._claims(raw))["sub"] == "admin"

    async def test_bad_bodies_are_4xx(self, client: httpx.AsyncClient) -> None:
        for kw, status, code in (
            ({"data": {"password": "test"}}, 422, "validation_error"),
            ({"data": {"username": "test"}}, 422, "validation_error"),
            ({"data": {"username": "test", "password": "test", "grant_type": "code"}}, 422, None),
            (
                {"json": {"username": "test", "email": "admin@example.com", "password": "x"}},
                422,
                None,
            ),
            ({"json": {"email": "test@example.com"}}, 422, "validation_error"),
            (
                {
                    "content": b"username=t%FFst&password=test",
                    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                },
                422,
                "validation_error",
            ),
            (
                {"content": b"username=test", "headers": {"Content-Type": "text/plain"}},
                415,
                "unsupported_media_type",
            ),
            ({"content": b"", "headers": {"Content-Type": "application/json"}}, 422, None),
            ({"content": b""}, 422, None),
        ):
            assert_error(await client.post("/api/auth/login", **kw), status, code)

    async def test_wrong_forms_count_for_the_throttle(self, client: httpx.AsyncClient) -> None:
        limit = 10  # settings.login_max_failures default
        wrong = (
            lambda: client.post(
                "/api/auth/login", json={"email": "test@example.com", "password": "no"}
            ),
            lambda: client.post(
                "/api/auth/login", data={"email": "test@example.com", "password": "no"}
            ),
            lambda: client.post("/api/auth/login", data={"username": "test", "password": "no"}),
            lambda: client.post("/api/auth/login", json={"username": "test", "password": "no"}),
        )
        for i in range(limit):
            assert_error(await wrong[i % len(wrong)](), 401, "invalid_credentials")
        for right in (
            {"data": {"email": "test@example.com", "password": "test"}},
            {"json": {"email": "test@example.com", "password": "test"}},
            {"data": {"username": "test", "password": "test", "grant_type": "password"}},
        ):
            assert_error(await client.post("/api/auth/login", **right), 429, "rate_limited")
