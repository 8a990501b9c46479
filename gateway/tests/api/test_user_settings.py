"""/api/users/me/settings: the caller's default system prompt and sampling parameters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.db.models import UserSettings
from tests.conftest import assert_error

PATH = "/api/users/me/settings"
ALL_NULL = {
    "system_prompt": None,
    "temperature": None,
    "top_p": None,
    "max_tokens": None,
    "language": None,
}
FULL = {
    "system_prompt": "Answer in one sentence.",
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 512,
    "language": "ko",
}


async def stored_rows(app: FastAPI) -> int:
    async with app.state.session_factory() as session:
        count: int = (await session.execute(select(func.count(UserSettings.user_id)))).scalar_one()
        return count


class TestAccess:
    @pytest.mark.parametrize(("method", "body"), [("GET", None), ("PUT", FULL)])
    async def test_anonymous(self, client: httpx.AsyncClient, method: str, body: object) -> None:
        assert_error(await client.request(method, PATH, json=body), 401, "unauthorized")


class TestGet:
    async def test_never_set_is_all_null_and_creates_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.get(PATH, headers=user_headers)
        assert r.status_code == 200, r.text
        assert r.json() == ALL_NULL
        assert await stored_rows(app) == 0


class TestPut:
    async def test_create_then_read_back(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.put(PATH, headers=user_headers, json=FULL)
        assert r.status_code == 200, r.text
        assert r.json() == FULL
        assert (await client.get(PATH, headers=user_headers)).json() == FULL
        assert await stored_rows(app) == 1

    async def test_full_replacement_missing_is_null(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        await client.put(PATH, headers=user_headers, json=FULL)
        r = await client.put(PATH, headers=user_headers, json={"temperature": 1.2})
        assert r.status_code == 200, r.text
        assert r.json() == {**ALL_NULL, "temperature": 1.2}
        assert (await client.get(PATH, headers=user_headers)).json() == r.json()
        assert await stored_rows(app) == 1

    async def test_empty_body_clears_everything(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        await client.put(PATH, headers=user_headers, json=FULL)
        r = await client.put(PATH, headers=user_headers, json={})
        assert r.json() == ALL_NULL
        assert (await client.get(PATH, headers=user_headers)).json() == ALL_NULL

    @pytest.mark.parametrize(
        "body",
        [
            {"temperature": 0, "top_p": 1, "max_tokens": 1, "language": "en"},
            {"temperature": 2, "top_p": 0.01, "max_tokens": 1_000_000, "language": None},
            {"system_prompt": "s" * 20_000},
        ],
    )
    async def test_boundaries_are_accepted(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        r = await client.put(PATH, headers=user_headers, json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {**ALL_NULL, **body}

    @pytest.mark.parametrize(
        "body",
        [
            {"temperature": -0.1},
            {"temperature": 2.01},
            {"temperature": "hot"},
            {"top_p": 0},
            {"top_p": 1.5},
            {"max_tokens": 0},
            {"max_tokens": 1_000_001},
            {"max_tokens": 1.5},
            {"language": "fr"},
            {"system_prompt": "s" * 20_001},
            {"theme": "dark"},
            [],
        ],
    )
    async def test_invalid_is_422_and_stores_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        body: object,
    ) -> None:
        await client.put(PATH, headers=user_headers, json=FULL)
        err = assert_error(
            await client.put(PATH, headers=user_headers, json=body), 422, "validation_error"
        )
        assert err["details"]
        assert (await client.get(PATH, headers=user_headers)).json() == FULL


class TestIsolation:
    async def test_one_users_settings_are_not_anothers(
        self,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        admin_headers: dict[str, str],
    ) -> None:
        await client.put(PATH, headers=user_headers, json=FULL)
        assert (await client.get(PATH, headers=admin_headers)).json() == ALL_NULL
        admin_settings = {**ALL_NULL, "language": "en", "max_tokens": 64}
        r = await client.put(PATH, headers=admin_headers, json=admin_settings)
        assert r.json() == admin_settings
        assert (await client.get(PATH, headers=user_headers)).json() == FULL
        assert (await client.get(PATH, headers=admin_headers)).json() == admin_settings


async def test_concurrent_first_saves_do_not_collide(client, user_headers) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    bodies = [{"system_prompt": f"prompt {i}", "temperature": 0.5} for i in range(8)]
    responses = await asyncio.gather(
        *(client.put("/api/users/me/settings", headers=user_headers, json=b) for b in bodies)
    )
    assert [r.status_code for r in responses] == [200] * 8
    final = (await client.get("/api/users/me/settings", headers=user_headers)).json()
    assert final["system_prompt"] in {b["system_prompt"] for b in bodies}
