"""Queries on usage rows (the `requests` table). No commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, and_, case, func, insert, or_, select
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


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    """Sums per group; averages are left to the caller so that groups add up exactly."""

    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    ttft_sum: int
    ttft_count: int
    latency_sum: int
    latency_count: int


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


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """One executemany INSERT for the whole batch."""
        await self.session.execute(insert(RequestLog), list(rows))

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
        key: ColumnElement[Any] | InstrumentedAttribute[Any]
        if group_by == "day":
            key = utc_day(RequestLog.created_at)
        elif group_by == "model":
            key = RequestLog.model
        else:
            key = User.username
        stmt = (
            select(
                key.label("key"),
                func.count(RequestLog.id),
                _int_sum(RequestLog.prompt_tokens),
                _int_sum(RequestLog.completion_tokens),
                _int_sum(case((RequestLog.status_code >= 400, 1), else_=0)),
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
