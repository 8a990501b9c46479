"""Hostile input on every route is a 4xx error body, the same on SQLite and Postgres: NUL
characters anywhere (422 naming the field), integers past the columns' range (422), paths and
headers no route can take (404, 431). Nothing is stored and nothing answers 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from tests.conftest import assert_error, empty_tables, make_settings

NUL = "\x00"
INT64_OVER = 2**63  # 9223372036854775808


def assert_nul_refused(response: httpx.Response, field: str) -> None:
    # the OpenAI-compatible surface answers an invalid request with 400 and names the field
    openai = response.request.url.path.startswith("/v1/")
    err = assert_error(response, 400 if openai else 422, "validation_error")
    assert err["message"].startswith(f"{field}:"), err
    assert "NUL" in err["message"], err
    if openai:
        assert err["param"] == field, err


class TestNulIsRefusedEverywhere:
    async def test_login_name_and_password(self, client: httpx.AsyncClient) -> None:
        for body, field in (
            ({"username": f"admin{NUL}", "password": "admin123"}, "username"),
            ({"username": "admin", "password": f"admin123{NUL}"}, "password"),
            ({"email": f"test{NUL}@example.com", "password": "test"}, "email"),
        ):
            assert_nul_refused(await client.post("/api/auth/login", json=body), field)
        form = await client.post(
            "/api/auth/login", data={"username": f"ad{NUL}min", "password": "admin123"}
        )
        assert_nul_refused(form, "username")

    async def test_password_change_and_key_names(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/auth/change-password",
            headers=user_headers,
            json={"current_password": "test", "new_password": f"longenough{NUL}"},
        )
        assert_nul_refused(r, "new_password")
        r = await client.post("/api/auth/keys", headers=user_headers, json={"name": f"k{NUL}"})
        assert_nul_refused(r, "name")
        keys = await client.get("/api/auth/keys", headers=user_headers)
        assert keys.json()["keys"] == []

    async def test_conversation_titles_system_prompts_and_settings(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        for body, field in (
            ({"title": f"a{NUL}b"}, "title"),
            ({"system_prompt": f"be{NUL}kind"}, "system_prompt"),
            ({"model": f"m{NUL}"}, "model"),
        ):
            r = await client.post("/api/conversations", headers=user_headers, json=body)
            assert_nul_refused(r, field)
        created = await client.post("/api/conversations", headers=user_headers, json={})
        cid = created.json()["id"]
        r = await client.patch(
            f"/api/conversations/{cid}", headers=user_headers, json={"title": f"x{NUL}"}
        )
        assert_nul_refused(r, "title")
        r = await client.put(
            "/api/users/me/settings", headers=user_headers, json={"system_prompt": NUL}
        )
        assert_nul_refused(r, "system_prompt")
        r = await client.put("/api/users/me/settings", headers=user_headers, json={"language": NUL})
        assert_error(r, 422, "validation_error")
        listed = await client.get("/api/conversations", headers=user_headers)
        assert [c["title"] for c in listed.json()["conversations"]] == [None]
        assert (await client.get("/api/users/me/settings", headers=user_headers)).json()[
            "system_prompt"
        ] is None

    async def test_query_parameters_and_paths(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        for url, field in (
            ("/api/conversations?q=a%00b", "q"),
            ("/api/conversations?cursor=%00", "cursor"),
            ("/api/usage?from=2026-01-01%00", "from"),
        ):
            assert_nul_refused(await client.get(url, headers=user_headers), field)
        for url in ("/api/conversations/%00", "/api/conversations/abc%00/export"):
            assert_error(await client.get(url, headers=user_headers), 404, "not_found")

    async def test_admin_user_fields(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        for body, field in (
            ({"username": f"bob{NUL}", "password": "password1"}, "username"),
            ({"username": "bob", "email": f"b{NUL}@example.com", "password": "password1"}, "email"),
            ({"username": "bob", "password": f"password1{NUL}"}, "password"),
        ):
            r = await client.post("/api/admin/users", headers=admin_headers, json=body)
            assert_error(r, 422, "validation_error")
            assert r.json()["error"]["message"].startswith(f"{field}:")
        users = await client.get("/api/admin/users", headers=admin_headers)
        test_id = next(u["id"] for u in users.json()["users"] if u["username"] == "test")
        r = await client.patch(
            f"/api/admin/users/{test_id}",
            headers=admin_headers,
            json={"password": f"pw{NUL}pwpwpw"},
        )
        assert_nul_refused(r, "password")
        r = await client.post("/api/models/switch", headers=admin_headers, json={"profile_id": NUL})
        assert_nul_refused(r, "profile_id")

    @pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
    async def test_chat_is_refused_before_upstream_and_store(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], path: str
    ) -> None:
        # vLLM is down in these tests: a 4xx (not a 503) shows the check runs before upstream
        hi = {"role": "user", "content": "hi"}
        for body, field in (
            ({"messages": [{"role": "user", "content": f"a{NUL}b"}]}, "messages.0.content"),
            (
                {"messages": [hi, {"role": "user", "content": [{"type": "text", "text": NUL}]}]},
                "messages.1.content.0.text",
            ),
            ({"messages": [hi], "system_prompt": NUL}, "system_prompt"),
            ({"messages": [hi], "stop": ["ok", NUL]}, "stop.1"),
        ):
            r = await client.post(path, headers=user_headers, json=body)
            assert_nul_refused(r, field)
            assert "x-conversation-id" not in r.headers
        listed = await client.get("/api/conversations", headers=user_headers)
        assert listed.json()["conversations"] == []

    async def test_unpaired_surrogates_are_refused(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        # valid JSON to Python's parser, but no text a database can store (pydantic refuses it)
        headers = {**user_headers, "Content-Type": "application/json"}
        for url, raw, field in (
            ("/api/conversations", b'{"title": "a\\ud800"}', "title"),
            ("/api/auth/keys", b'{"name": "\\udfff"}', "name"),
            ("/api/auth/login", b'{"username": "\\ud83d", "password": "x"}', "username"),
        ):
            r = await client.post(url, content=raw, headers=headers)
            err = assert_error(r, 422)
            # the login body is parsed by orjson, which calls it invalid JSON
            assert err["message"].startswith(f"{field}:") or err["code"] == "invalid_json", err
        r = await client.post(
            "/api/conversations", content=b'{"title": "\\ud83d\\ude00"}', headers=headers
        )
        assert r.status_code == 201 and r.json()["title"] == "\U0001f600"  # a paired one is text


class TestIntegersPastTheColumns:
    async def test_path_ids(self, client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
        for method, url in (
            ("DELETE", f"/api/auth/keys/{INT64_OVER}"),
            ("DELETE", f"/api/admin/users/{INT64_OVER}"),
            ("PATCH", f"/api/admin/users/{INT64_OVER}"),
            ("DELETE", f"/api/auth/keys/{10**40}"),
        ):
            r = await client.request(method, url, headers=admin_headers, json={})
            assert_error(r, 422, "validation_error")
        r = await client.delete(f"/api/auth/keys/{INT64_OVER - 1}", headers=admin_headers)
        assert_error(r, 404, "not_found")

    async def test_query_integers(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        for url in (
            f"/api/admin/users?offset={INT64_OVER}",
            f"/api/admin/users?offset={2**31}",
            f"/api/admin/usage?user_id={INT64_OVER}",
            "/api/admin/usage?user_id=-1",
            f"/api/conversations?limit={INT64_OVER}",
        ):
            assert_error(await client.get(url, headers=admin_headers), 422, "validation_error")
        ok = await client.get(f"/api/admin/users?offset={2**31 - 1}", headers=admin_headers)
        assert ok.status_code == 200 and ok.json()["users"] == []

    async def test_limits_in_admin_routes_fit_their_columns(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        users = await client.get("/api/admin/users", headers=admin_headers)
        test_id = next(u["id"] for u in users.json()["users"] if u["username"] == "test")
        url = f"/api/admin/users/{test_id}"
        for body in (
            {"requests_per_minute": INT64_OVER},
            {"requests_per_minute": 2**31},
            {"max_concurrent_streams": 2**31},
            {"tokens_per_day": 2**53},
            {"tokens_per_day": -1},
        ):
            r = await client.patch(url, headers=admin_headers, json=body)
            assert_error(r, 422, "validation_error")
            r = await client.post(
                "/api/admin/users",
                headers=admin_headers,
                json={"username": "limits", "password": "password1", **body},
            )
            assert_error(r, 422, "validation_error")
        # the largest values the settings allow are stored as they are (a 32-bit column could not)
        top = {
            "requests_per_minute": 2**31 - 1,
            "max_concurrent_streams": 2**31 - 1,
            "tokens_per_day": 1_099_511_627_776,
        }
        r = await client.patch(url, headers=admin_headers, json=top)
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in top} == top
        r = await client.patch(url, headers=admin_headers, json={"tokens_per_day": 2**53 - 1})
        assert r.status_code == 200 and r.json()["tokens_per_day"] == 2**53 - 1
        again = await client.get("/api/admin/users", headers=admin_headers)
        stored = next(u for u in again.json()["users"] if u["id"] == test_id)
        assert stored["tokens_per_day"] == 2**53 - 1
        created = await client.post(
            "/api/admin/users",
            headers=admin_headers,
            json={"username": "big", "password": "password1", **top},
        )
        assert (
            created.status_code == 201 and created.json()["tokens_per_day"] == top["tokens_per_day"]
        )

    async def test_body_integers_and_dates(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/auth/keys",
            headers=user_headers,
            json={"name": "k", "expires_in_days": INT64_OVER},
        )
        assert_error(r, 422, "validation_error")
        r = await client.put(
            "/api/users/me/settings", headers=user_headers, json={"max_tokens": INT64_OVER}
        )
        assert_error(r, 422, "validation_error")
        # a date whose day after (the end of `to`) or 30 days before (the default `from`) is
        # outside the calendar
        for query in ("to=0001-01-01", "to=9999-12-31", "to=0001-01-01T00:00:00"):
            r = await client.get(f"/api/usage?{query}", headers=user_headers)
            assert_error(r, 422, "validation_error")
        assert (
            await client.get("/api/usage?to=9999-12-30", headers=user_headers)
        ).status_code == 200


class TestClientFaultsBeforeRouting:
    async def test_header_count_and_size_are_bounded(self, client: httpx.AsyncClient) -> None:
        many = [(f"x-h{i}", "v") for i in range(5000)]
        assert_error(await client.get("/health/live", headers=many), 431, "headers_too_large")
        big = {"x-big": "v" * (1024 * 1024)}
        assert_error(await client.get("/health/live", headers=big), 431, "headers_too_large")
        normal = {"x-fine": "v" * 4000, "user-agent": "test"}
        assert (await client.get("/health/live", headers=normal)).status_code == 200

    async def test_nul_in_ui_paths_is_a_404(self, database_url: str, tmp_path: Path) -> None:
        dist = tmp_path / "dist"
        (dist / "assets").mkdir(parents=True)
        (dist / "index.html").write_text("<!doctype html><title>ui</title>")
        (dist / "assets" / "app.js").write_text("console.log(1)")
        settings: Settings = make_settings(database_url, tmp_path, ui_dist_dir=dist)
        await empty_tables(database_url, settings)
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=30):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as ui:
                for url in ("/%00", "/assets/app.js%00", "/chat/%00x"):
                    assert_error(await ui.get(url), 404, "not_found")
                long_name = await ui.get("/" + "a" * 5000)  # the file system refuses the name
                assert long_name.status_code == 200 and "<title>ui" in long_name.text
                assert (await ui.get("/assets/app.js")).text == "console.log(1)"


class TestOpenApiDocument:
    async def test_errors_are_described_with_the_spec_body(self, client: httpx.AsyncClient) -> None:
        doc: dict[str, Any] = (await client.get("/openapi.json")).json()
        schemas = doc["components"]["schemas"]
        assert "HTTPValidationError" not in schemas
        assert schemas["ErrorResponse"]["required"] == ["error"]
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        seen_422 = 0
        for path, operations in doc["paths"].items():
            for method, op in operations.items():
                responses = op["responses"]
                assert responses["default"]["content"]["application/json"]["schema"] == ref, (
                    path,
                    method,
                )
                if "422" in responses:
                    seen_422 += 1
                    assert responses["422"]["content"]["application/json"]["schema"] == ref
        assert seen_422 > 10
        assert set(schemas["ErrorResponse"]["properties"]) == {"error"}
        login = doc["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]
        assert set(login) == {"application/json", "application/x-www-form-urlencoded"}
        for media in login.values():
            assert {"username", "email", "password", "grant_type"} <= set(
                media["schema"]["properties"]
            )


async def test_a_body_json_cannot_decode_is_invalid_json_on_every_route(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """Bytes that are not UTF-8, or nesting deeper than the parser's recursion limit: 422
    `invalid_json` like any other broken JSON (the chat routes already said so); the routes
    FastAPI parses answered 400 `bad_request` "There was an error parsing the body"."""
    headers = {**admin_headers, "Content-Type": "application/json"}
    nested = b"[" * 100_000 + b"]" * 100_000
    for url in ("/api/models/switch", "/api/conversations", "/api/auth/keys"):
        for raw in (b'{"profile_id": "\xff\xfe"}', b'{"title": ' + nested + b"}"):
            r = await client.post(url, content=raw, headers=headers)
            err = assert_error(r, 422, "invalid_json")
            assert err["message"] == "request body is not valid JSON", err
