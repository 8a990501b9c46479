"""Queries on usage rows (the `requests` table). No commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, and_, case, cast, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.db.models import Conversation, RequestLog, User

GroupBy = Literal["day", "model", "user"]


class utc_day(FunctionElement[str]):
    """`YYYY-MM-DD` of a timestamp, in UTC whatever the connection's time zone."""

    type = String()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_default(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps naive UTC text ("2024-01-05 10:00:00.000000"): date() reads it as is
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgres(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # date(timestamptz) would use the session's TimeZone; literals, not binds, so that the
    # same text appears in SELECT and GROUP BY
    arg = compiler.process(element.clauses, **kw)
    return f"to_char(({arg}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Rows with `start <= created_at < end`, of one user or (user_id None) of everyone."""

    start: datetime
    end: datetime
    user_id: int | None = None


_INSERT_ROWS = insert(RequestLog.__table__)  # type: ignore[arg-type]  # built once

CLIENT_CLOSED = 499  # the client went away: a cancellation, not an error
PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    """Sums per group; averages are left to the caller so that groups add up exactly."""

    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cancelled: int
    ttft_sum: int
    ttft_count: int
    latency_sum: int
    latency_count: int


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50/p95/p99 of TTFT and latency (ms) of one group's completed requests; None: no values."""

    ttft: tuple[float | None, ...]
    latency: tuple[float | None, ...]


NO_PERCENTILES = Percentiles((None,) * len(PERCENTILES), (None,) * len(PERCENTILES))


def percentile_cont(values: Sequence[int], q: float) -> float | None:
    """Postgres' percentile_cont (linear interpolation between the nearest ranks) in Python."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class UsageExportRow:
    id: int
    created_at: datetime
    request_id: str | None
    username: str | None
    model: str | None
    profile: str | None
    client: str
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_source: str | None  # "upstream" | "gateway" (a cut stream, counted by the gateway)
    ttft_ms: int | None
    latency_ms: int | None
    status_code: int
    error_code: str | None
    conversation_id: str | None


def _where(flt: UsageFilter) -> list[ColumnElement[bool]]:
    conds = [RequestLog.created_at >= flt.start, RequestLog.created_at < flt.end]
    if flt.user_id is not None:
        conds.append(RequestLog.user_id == flt.user_id)
    return conds


def _int_sum(column: Any) -> ColumnElement[int]:
    return func.coalesce(func.sum(column), 0)


def _is_error() -> ColumnElement[bool]:
    return and_(RequestLog.status_code >= 400, RequestLog.status_code != CLIENT_CLOSED)


def _group_key(group_by: GroupBy) -> ColumnElement[Any] | InstrumentedAttribute[Any]:
    if group_by == "day":
        return utc_day(RequestLog.created_at)
    if group_by == "model":
        return RequestLog.model
    return User.username


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """One executemany INSERT for the whole batch: a Core insert on the table, not the ORM
        entity, so SQLAlchemy's ORM bulk machinery stays out of it (issue 17's profile)."""
        await self.session.execute(_INSERT_ROWS, list(rows))

    async def existing_conversation_ids(self, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        stmt = select(Conversation.id).where(Conversation.id.in_(list(ids)))
        return set((await self.session.execute(stmt)).scalars())

    async def existing_user_ids(self, ids: Collection[int]) -> set[int]:
        if not ids:
            return set()
        stmt = select(User.id).where(User.id.in_(list(ids)))
        return set((await self.session.execute(stmt)).scalars())

    async def aggregate(self, flt: UsageFilter, group_by: GroupBy) -> list[UsageAggregate]:
        key = _group_key(group_by)
        stmt = (
            select(
                key.label("key"),
                func.count(RequestLog.id),
                _int_sum(RequestLog.prompt_tokens),
                _int_sum(RequestLog.completion_tokens),
                _int_sum(case((_is_error(), 1), else_=0)),
                _int_sum(case((RequestLog.status_code == CLIENT_CLOSED, 1), else_=0)),
                _int_sum(RequestLog.ttft_ms),
                func.count(RequestLog.ttft_ms),
                _int_sum(RequestLog.latency_ms),
                func.count(RequestLog.latency_ms),
            )
            .where(*_where(flt))
            .group_by(key)
        )
        if group_by == "user":
            stmt = stmt.outerjoin(User, User.id == RequestLog.user_id)
        rows = (await self.session.execute(stmt)).all()
        return [
            UsageAggregate(None if row[0] is None else str(row[0]), *(int(v) for v in row[1:]))
            for row in rows
        ]

    async def errors_by_code(
        self, flt: UsageFilter, group_by: GroupBy
    ) -> dict[str | None, dict[str, int]]:
        """Error counts per group and error code (the status code where a row has none)."""
        key = _group_key(group_by)
        code = func.coalesce(RequestLog.error_code, cast(RequestLog.status_code, String))
        stmt = (
            select(key.label("key"), code.label("code"), func.count(RequestLog.id))
            .where(*_where(flt), _is_error())
            .group_by(key, code)
        )
        if group_by == "user":
            stmt = stmt.outerjoin(User, User.id == RequestLog.user_id)
        out: dict[str | None, dict[str, int]] = {}
        for row_key, row_code, count in (await self.session.execute(stmt)).all():
            group = None if row_key is None else str(row_key)
            out.setdefault(group, {})[str(row_code)] = int(count)
        return out

    async def percentiles(
        self, flt: UsageFilter, group_by: GroupBy | None
    ) -> dict[str | None, Percentiles]:
        """TTFT and latency percentiles of completed requests (status < 400) per group, or of
        the whole window under the key None when group_by is None.

        Postgres computes them (percentile_cont); SQLite has no such aggregate, so its values
        are read and interpolated the same way here.
        """
        key = None if group_by is None else _group_key(group_by)
        conds = [*_where(flt), RequestLog.status_code < 400]
        if self.session.get_bind().dialect.name == "postgresql":
            return await self._percentiles_in_sql(key, group_by, conds)
        cols: list[Any] = [RequestLog.ttft_ms, RequestLog.latency_ms]
        stmt = select(*(cols if key is None else [key.label("key"), *cols])).where(*conds)
        if group_by == "user":
            stmt = stmt.outerjoin(User, User.id == RequestLog.user_id)
        values: dict[str | None, tuple[list[int], list[int]]] = {}
        for row in (await self.session.execute(stmt)).all():
            group = None if key is None or row[0] is None else str(row[0])
            ttft, latency = row[-2], row[-1]
            ttfts, latencies = values.setdefault(group, ([], []))
            if ttft is not None:
                ttfts.append(int(ttft))
            if latency is not None:
                latencies.append(int(latency))
        return {
            group: Percentiles(
                tuple(percentile_cont(ttfts, q) for q in PERCENTILES),
                tuple(percentile_cont(latencies, q) for q in PERCENTILES),
            )
            for group, (ttfts, latencies) in values.items()
        }

    async def _percentiles_in_sql(
        self,
        key: ColumnElement[Any] | InstrumentedAttribute[Any] | None,
        group_by: GroupBy | None,
        conds: list[ColumnElement[bool]],
    ) -> dict[str | None, Percentiles]:
        aggs = [
            func.percentile_cont(q).within_group(column)
            for column in (RequestLog.ttft_ms, RequestLog.latency_ms)
            for q in PERCENTILES
        ]
        if key is None:
            stmt = select(*aggs).where(*conds)
        else:
            stmt = select(key.label("key"), *aggs).where(*conds).group_by(key)
        if group_by == "user":
            stmt = stmt.outerjoin(User, User.id == RequestLog.user_id)
        n = len(PERCENTILES)
        out: dict[str | None, Percentiles] = {}
        for row in (await self.session.execute(stmt)).all():
            group = None if key is None or row[0] is None else str(row[0])
            vals = [None if v is None else float(v) for v in row[-2 * n :]]
            out[group] = Percentiles(tuple(vals[:n]), tuple(vals[n:]))
        return out

    async def export_page(
        self, flt: UsageFilter, *, after: tuple[datetime, int] | None, limit: int
    ) -> list[UsageExportRow]:
        """One keyset page in (created_at, id) order, starting after the given position."""
        conds = _where(flt)
        if after is not None:
            at, row_id = after
            conds.append(
                or_(
                    RequestLog.created_at > at,
                    and_(RequestLog.created_at == at, RequestLog.id > row_id),
                )
            )
        stmt = (
            select(
                RequestLog.id,
                RequestLog.created_at,
                RequestLog.request_id,
                User.username,
                RequestLog.model,
                RequestLog.profile,
                RequestLog.client,
                RequestLog.prompt_tokens,
                RequestLog.completion_tokens,
                RequestLog.tokens_source,
                RequestLog.ttft_ms,
                RequestLog.latency_ms,
                RequestLog.status_code,
                RequestLog.error_code,
                RequestLog.conversation_id,
            )
            .outerjoin(User, User.id == RequestLog.user_id)
            .where(*conds)
            .order_by(RequestLog.created_at, RequestLog.id)
            .limit(limit)
        )
        return [UsageExportRow(**row._asdict()) for row in (await self.session.execute(stmt)).all()]
