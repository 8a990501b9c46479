"""/api/usage, /api/admin/usage and /api/usage/export.csv over known usage rows."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, text

from app.db.base import utcnow
from app.db.models import RequestLog, User
from app.repositories.usage import UsageFilter, UsageRepository, percentile_cont
from app.schemas.usage import CSV_COLUMNS
from tests.conftest import assert_error

JAN = "from=2024-01-01&to=2024-01-31"


def at(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


async def user_ids(app: FastAPI) -> dict[str, int]:
    async with app.state.session_factory() as session:
        rows = (await session.execute(select(User.username, User.id))).all()
    return {name: uid for name, uid in rows}


async def insert_rows(app: FastAPI, rows: list[dict[str, Any]]) -> None:
    defaults = {"client": "api", "status_code": 200}
    async with app.state.session_factory.begin() as session:
        await session.execute(insert(RequestLog), [defaults | r for r in rows])


@pytest.fixture
async def known_rows(app: FastAPI) -> dict[str, int]:
    ids = await user_ids(app)
    test, admin = ids["test"], ids["admin"]
    await insert_rows(
        app,
        [
            # outside January: never counted
            {"user_id": test, "model": "a", "created_at": at("2023-12-31T23:59:59Z")},
            {
                "user_id": test,
                "request_id": "r1",
                "model": "a",
                "profile": "p1",
                "client": "ui",
                "prompt_tokens": 10,
                "completion_tokens": 20,
                "tokens_source": "upstream",
                "ttft_ms": 100,
                "latency_ms": 1000,
                "created_at": at("2024-01-01T10:00:00Z"),
            },
            {
                "user_id": test,
                "request_id": "r2",
                "model": "b",
                "prompt_tokens": 5,
                "completion_tokens": 0,
                "latency_ms": 50,
                "status_code": 502,
                "error_code": "upstream_error",
                "created_at": at("2024-01-01T23:59:59.500000Z"),
            },
            {
                "user_id": test,
                "request_id": "r3",
                "model": "a",
                "prompt_tokens": 1,
                "completion_tokens": 2,
                "ttft_ms": 300,
                "latency_ms": 3000,
                # 19:00 in New York, already the 2nd in UTC
                "created_at": at("2024-01-01T19:00:00-05:00"),
            },
            {
                "user_id": admin,
                "request_id": "r4",
                "model": "b",
                "prompt_tokens": 100,
                "completion_tokens": 200,
                "ttft_ms": 50,
                "latency_ms": 500,
                "created_at": at("2024-01-02T12:00:00Z"),
            },
            {  # a deleted user's row
                "user_id": None,
                "request_id": "r5",
                "model": "a",
                "prompt_tokens": 7,
                "completion_tokens": 8,
                "status_code": 429,
                "error_code": "rate_limited",
                "created_at": at("2024-01-03T05:00:00Z"),
            },
        ],
    )
    return ids


NO_P: tuple[float | None, ...] = (None, None, None)


def stats(
    requests: int,
    prompt: int,
    completion: int,
    errors: int,
    ttft: float | None,
    latency: float | None,
    *,
    cancelled: int = 0,
    codes: dict[str, int] | None = None,
    ttft_p: tuple[float | None, ...] = NO_P,
    latency_p: tuple[float | None, ...] = NO_P,
) -> dict[str, Any]:
    """The expected stats; ttft_p and latency_p are (p50, p95, p99)."""
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "errors": errors,
        "cancelled": cancelled,
        "errors_by_code": codes or {},
        "avg_ttft_ms": ttft,
        "avg_latency_ms": latency,
        **{f"p{q}_ttft_ms": v for q, v in zip((50, 95, 99), ttft_p, strict=True)},
        **{f"p{q}_latency_ms": v for q, v in zip((50, 95, 99), latency_p, strict=True)},
    }


UPSTREAM = {"upstream_error": 1}
# the test user's completed requests r1 and r3: TTFT 100, 300 and latency 1000, 3000
TEST_P = {"ttft_p": (200.0, 290.0, 298.0), "latency_p": (2000.0, 2900.0, 2980.0)}


class TestAccess:
    @pytest.mark.parametrize("path", ["/api/usage", "/api/admin/usage", "/api/usage/export.csv"])
    async def test_anonymous(self, client: httpx.AsyncClient, path: str) -> None:
        assert_error(await client.get(path), 401, "unauthorized")

    async def test_admin_report_forbidden_for_user_role(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        assert_error(await client.get("/api/admin/usage", headers=user_headers), 403, "forbidden")

    async def test_export_all_forbidden_for_user_role(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.get("/api/usage/export.csv?all=true", headers=user_headers)
        assert_error(r, 403, "forbidden")


class TestValidation:
    @pytest.mark.parametrize(
        "params",
        [
            "from=2024-01-05&to=2024-01-04",
            "from=2024-01-05T10:00:00Z&to=2024-01-05T10:00:00Z",
            "from=2024-01-05T10:00:00Z&to=2024-01-05T09:00:00Z",
            "from=yesterday",
            "to=2024-13-01",
            "group_by=week",
            "group_by=user",  # only admins group by user
        ],
    )
    async def test_bad_query_is_422(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], params: str
    ) -> None:
        r = await client.get(f"/api/usage?{params}", headers=user_headers)
        assert_error(r, 422, "validation_error")

    async def test_export_bad_window_is_422(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.get(
            "/api/usage/export.csv?from=2024-02-01&to=2024-01-01", headers=user_headers
        )
        assert_error(r, 422, "validation_error")


class TestOwnUsage:
    async def test_by_day_in_utc(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/usage?{JAN}&group_by=day", headers=user_headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["group_by"] == "day"
        assert at(body["from"]) == at("2024-01-01T00:00:00Z")
        assert at(body["to"]) == at("2024-02-01T00:00:00Z")  # a bare `to` date is included
        # only the test user's rows: not the admin's, not the deleted user's, not December's
        assert body["totals"] == stats(3, 16, 22, 1, 200.0, 1350.0, codes=UPSTREAM, **TEST_P)
        assert body["groups"] == [
            {
                "key": "2024-01-01",
                # the 502's latency counts in the average, not in the percentiles
                **stats(
                    2,
                    15,
                    20,
                    1,
                    100.0,
                    525.0,
                    codes=UPSTREAM,
                    ttft_p=(100.0,) * 3,
                    latency_p=(1000.0,) * 3,
                ),
            },
            {
                "key": "2024-01-02",
                **stats(1, 1, 2, 0, 300.0, 3000.0, ttft_p=(300.0,) * 3, latency_p=(3000.0,) * 3),
            },
        ]

    async def test_by_model(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/usage?{JAN}&group_by=model", headers=user_headers)
        body = r.json()
        assert body["totals"] == stats(3, 16, 22, 1, 200.0, 1350.0, codes=UPSTREAM, **TEST_P)
        assert body["groups"] == [
            {"key": "a", **stats(2, 11, 22, 0, 200.0, 2000.0, **TEST_P)},
            {"key": "b", **stats(1, 5, 0, 1, None, 50.0, codes=UPSTREAM)},
        ]

    async def test_one_day_window_and_datetimes(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get("/api/usage?from=2024-01-01&to=2024-01-01", headers=user_headers)
        assert r.json()["totals"]["requests"] == 2
        # naive datetimes are UTC; the interval is [from, to)
        r = await client.get(
            "/api/usage?from=2024-01-01T10:00:00&to=2024-01-02T00:00:00", headers=user_headers
        )
        assert r.json()["totals"]["requests"] == 2
        r = await client.get(
            "/api/usage?from=2024-01-01T10:00:01%2B00:00&to=2024-01-02T00:00:00.000001Z",
            headers=user_headers,
        )
        assert r.json()["totals"]["requests"] == 2

    async def test_default_window_is_last_30_days(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        test = (await user_ids(app))["test"]
        now = utcnow()
        await insert_rows(
            app,
            [
                {"user_id": test, "model": "recent", "created_at": now - timedelta(days=1)},
                {"user_id": test, "model": "old", "created_at": now - timedelta(days=31)},
            ],
        )
        body = (await client.get("/api/usage?group_by=model", headers=user_headers)).json()
        assert [g["key"] for g in body["groups"]] == ["recent"]
        assert body["group_by"] == "model"
        span = at(body["to"]) - at(body["from"])
        assert span == timedelta(days=30)
        assert abs(at(body["to"]) - now) < timedelta(minutes=1)

    async def test_no_rows(self, client: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
        body = (await client.get(f"/api/usage?{JAN}", headers=user_headers)).json()
        assert body["totals"] == stats(0, 0, 0, 0, None, None)
        body = (await client.get(f"/api/usage?{JAN}&group_by=model", headers=user_headers)).json()
        assert body["totals"] == stats(0, 0, 0, 0, None, None)
        assert body["groups"] == []


class TestAdminUsage:
    async def test_by_user_keys_deleted_users_as_null(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/admin/usage?{JAN}&group_by=user", headers=admin_headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["totals"] == stats(
            5,
            123,
            230,
            2,
            150.0,
            1137.5,
            codes={"rate_limited": 1, "upstream_error": 1},
            ttft_p=(100.0, 280.0, 296.0),  # r1, r3, r4: not the 429 nor the 502
            latency_p=(1000.0, 2800.0, 2960.0),
        )
        assert [(g["key"], g["requests"]) for g in body["groups"]] == [
            ("admin", 1),
            ("test", 3),
            (None, 1),
        ]

    async def test_by_model_and_day_over_everyone(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/admin/usage?{JAN}&group_by=model", headers=admin_headers)
        assert [(g["key"], g["requests"]) for g in r.json()["groups"]] == [("a", 3), ("b", 2)]
        r = await client.get(f"/api/admin/usage?{JAN}", headers=admin_headers)
        assert r.json()["group_by"] == "day"
        assert [(g["key"], g["requests"]) for g in r.json()["groups"]] == [
            ("2024-01-01", 2),
            ("2024-01-02", 2),
            ("2024-01-03", 1),
        ]

    async def test_one_user(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(
            f"/api/admin/usage?{JAN}&user_id={known_rows['admin']}", headers=admin_headers
        )
        assert r.json()["totals"] == stats(
            1, 100, 200, 0, 50.0, 500.0, ttft_p=(50.0,) * 3, latency_p=(500.0,) * 3
        )

    async def test_own_report_of_an_admin_is_still_own(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/usage?{JAN}", headers=admin_headers)
        assert r.json()["totals"]["requests"] == 1


async def test_day_groups_ignore_the_connection_time_zone(
    app: FastAPI, known_rows: dict[str, int]
) -> None:
    """Postgres date(timestamptz) follows the session's TimeZone; ours must not."""
    async with app.state.session_factory() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))  # UTC+14
        aggs = await UsageRepository(session).aggregate(
            UsageFilter(at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z")), "day"
        )
    assert sorted((a.key, a.requests) for a in aggs) == [
        ("2024-01-01", 2),
        ("2024-01-02", 2),
        ("2024-01-03", 1),
    ]


def read_csv(response: httpx.Response) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]


class TestExport:
    async def test_own_rows(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        r = await client.get(f"/api/usage/export.csv?{JAN}", headers=user_headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        assert (
            r.headers["content-disposition"]
            == 'attachment; filename="usage-2024-01-01-2024-01-31.csv"'
        )
        rows = read_csv(r)
        assert [row["request_id"] for row in rows] == ["r1", "r2", "r3"]  # by created_at
        assert rows[0] == {
            "created_at": "2024-01-01T10:00:00+00:00",
            "request_id": "r1",
            "username": "test",
            "model": "a",
            "profile": "p1",
            "client": "ui",
            "prompt_tokens": "10",
            "completion_tokens": "20",
            "tokens_source": "upstream",
            "ttft_ms": "100",
            "latency_ms": "1000",
            "status_code": "200",
            "error_code": "",
            "conversation_id": "",
        }
        assert rows[1]["status_code"] == "502" and rows[1]["error_code"] == "upstream_error"
        assert rows[1]["ttft_ms"] == ""

    async def test_admin_exports_all_only_when_asked(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], known_rows: dict[str, int]
    ) -> None:
        own = read_csv(await client.get(f"/api/usage/export.csv?{JAN}", headers=admin_headers))
        assert [row["request_id"] for row in own] == ["r4"]
        r = await client.get(f"/api/usage/export.csv?{JAN}&all=true", headers=admin_headers)
        every = read_csv(r)
        assert [row["request_id"] for row in every] == ["r1", "r2", "r3", "r4", "r5"]
        assert every[-1]["username"] == ""  # the deleted user's row

    async def test_streams_many_rows_in_pages(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        test = (await user_ids(app))["test"]
        same_instant = at("2024-01-10T00:00:00Z")  # the keyset must not stall on ties
        await insert_rows(
            app,
            [
                {"user_id": test, "request_id": f"q{i}", "created_at": same_instant}
                for i in range(2345)
            ],
        )
        async with client.stream("GET", f"/api/usage/export.csv?{JAN}", headers=user_headers) as r:
            assert r.status_code == 200
            chunks = [chunk async for chunk in r.aiter_text()]
        rows = read_csv(httpx.Response(200, text="".join(chunks)))
        assert len(rows) == 2345
        assert len({row["request_id"] for row in rows}) == 2345

    async def test_formula_cells_are_neutralised(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        test = (await user_ids(app))["test"]
        await insert_rows(
            app,
            [{"user_id": test, "model": "=HYPERLINK(1)", "created_at": at("2024-01-05T00:00Z")}],
        )
        rows = read_csv(await client.get(f"/api/usage/export.csv?{JAN}", headers=user_headers))
        assert rows[0]["model"] == "'=HYPERLINK(1)"

    async def test_empty_export_has_the_header(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.get(f"/api/usage/export.csv?{JAN}", headers=user_headers)
        assert read_csv(r) == []


class TestCancellationsErrorsAndPercentiles:
    """Issue 13 #4: 499s are cancellations, errors are counted per code, and one runaway
    answer moves p99, not p50."""

    @pytest.fixture
    async def day_of_traffic(self, app: FastAPI) -> None:
        test = (await user_ids(app))["test"]
        day = at("2024-01-10T12:00:00Z")
        served = [{"latency_ms": i * 10, "ttft_ms": i * 20} for i in range(1, 100)]
        served.append({"latency_ms": 43_423, "ttft_ms": 5_000})  # the runaway answer
        rows: list[dict[str, Any]] = [{"model": "m", **r} for r in served]
        rows += [  # the user pressed Stop: the gateway records 499
            {"model": "m", "status_code": 499, "error_code": "client_closed", "latency_ms": 5}
        ] * 3
        rows += [
            # refused before a model was chosen: no model on the row
            {"model": None, "status_code": 429, "error_code": "rate_limited"},
            {"model": None, "status_code": 429, "error_code": "rate_limited"},
            {"model": "m", "status_code": 502, "error_code": "upstream_error", "latency_ms": 9},
            {"model": "m", "status_code": 500, "latency_ms": 9},  # no error code: its status
        ]
        await insert_rows(app, [{"user_id": test, "created_at": day, **r} for r in rows])

    async def test_totals(
        self,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        day_of_traffic: None,
    ) -> None:
        body = (await client.get(f"/api/usage?{JAN}", headers=user_headers)).json()
        totals = body["totals"]
        assert totals["requests"] == 107
        assert totals["cancelled"] == 3
        assert totals["errors"] == 4
        assert totals["errors_by_code"] == {"rate_limited": 2, "500": 1, "upstream_error": 1}
        # percentile_cont over the 100 served answers, the same on SQLite and Postgres
        assert (
            totals["p50_latency_ms"],
            totals["p95_latency_ms"],
            totals["p99_latency_ms"],
        ) == (505.0, 950.5, 1414.3)
        assert (totals["p50_ttft_ms"], totals["p95_ttft_ms"], totals["p99_ttft_ms"]) == (
            1010.0,
            1901.0,
            2010.2,
        )
        assert body["groups"][0]["p50_latency_ms"] == 505.0  # the one day

    async def test_by_model_keeps_refusals_apart(
        self,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        day_of_traffic: None,
    ) -> None:
        body = (await client.get(f"/api/usage?{JAN}&group_by=model", headers=user_headers)).json()
        groups = {g["key"]: g for g in body["groups"]}
        assert list(groups) == ["m", None]  # the no-model group last
        assert groups["m"]["requests"] == 105
        assert groups["m"]["cancelled"] == 3
        assert groups["m"]["errors_by_code"] == {"500": 1, "upstream_error": 1}
        assert groups["m"]["p99_latency_ms"] == 1414.3
        refused = groups[None]
        assert (refused["requests"], refused["errors"], refused["cancelled"]) == (2, 2, 0)
        assert refused["errors_by_code"] == {"rate_limited": 2}
        assert refused["p50_latency_ms"] is None

    async def test_admin_by_user(
        self,
        client: httpx.AsyncClient,
        admin_headers: dict[str, str],
        day_of_traffic: None,
    ) -> None:
        r = await client.get(f"/api/admin/usage?{JAN}&group_by=user", headers=admin_headers)
        (group,) = r.json()["groups"]
        assert (group["key"], group["cancelled"], group["errors"]) == ("test", 3, 4)
        assert group["p50_latency_ms"] == 505.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([7], 0.99, 7.0), ([1, 2], 0.5, 1.5), ([4, 1, 3, 2], 0.0, 1.0)],
)
def test_percentile_cont_matches_postgres(values: list[int], q: float, expected: float) -> None:
    assert percentile_cont(values, q) == expected
