"""Usage reports and the CSV export, over the rows the UsageRecorder writes."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import Forbidden
from app.repositories.usage import (
    NO_PERCENTILES,
    GroupBy,
    Percentiles,
    UsageAggregate,
    UsageExportRow,
    UsageFilter,
    UsageRepository,
)
from app.schemas.usage import (
    CSV_COLUMNS,
    UsageExportQuery,
    UsageGroup,
    UsageReport,
    UsageStats,
    UsageWindow,
)
from app.services.auth import Principal

EXPORT_PAGE_ROWS = 1000
# a cell starting with one of these is a formula to a spreadsheet (CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _avg(total: int, count: int) -> float | None:
    return round(total / count, 1) if count else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _stats(
    aggs: Iterable[UsageAggregate], codes: Iterable[dict[str, int]], pct: Percentiles
) -> UsageStats:
    aggs = list(aggs)
    by_code: Counter[str] = Counter()
    for c in codes:
        by_code.update(c)
    p50_ttft, p95_ttft, p99_ttft = (_ms(v) for v in pct.ttft)
    p50_latency, p95_latency, p99_latency = (_ms(v) for v in pct.latency)
    return UsageStats(
        requests=sum(a.requests for a in aggs),
        prompt_tokens=sum(a.prompt_tokens for a in aggs),
        completion_tokens=sum(a.completion_tokens for a in aggs),
        errors=sum(a.errors for a in aggs),
        cancelled=sum(a.cancelled for a in aggs),
        errors_by_code=dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
        avg_ttft_ms=_avg(sum(a.ttft_sum for a in aggs), sum(a.ttft_count for a in aggs)),
        avg_latency_ms=_avg(sum(a.latency_sum for a in aggs), sum(a.latency_count for a in aggs)),
        p50_ttft_ms=p50_ttft,
        p95_ttft_ms=p95_ttft,
        p99_ttft_ms=p99_ttft,
        p50_latency_ms=p50_latency,
        p95_latency_ms=p95_latency,
        p99_latency_ms=p99_latency,
    )


class UsageService:
    def __init__(self, session: AsyncSession) -> None:
        self.usage = UsageRepository(session)

    async def report(
        self, window: UsageWindow, group_by: GroupBy, *, user_id: int | None
    ) -> UsageReport:
        """Totals and per-group sums of one user's rows, or everyone's when user_id is None."""
        flt = UsageFilter(start=window.start, end=window.end, user_id=user_id)
        aggs = await self.usage.aggregate(flt, group_by)
        aggs.sort(key=lambda a: (a.key is None, a.key or ""))
        codes = await self.usage.errors_by_code(flt, group_by)
        # percentiles do not add up over groups: the window's own are a query of their own
        pcts = await self.usage.percentiles(flt, group_by)
        total_pct = (await self.usage.percentiles(flt, None)).get(None, NO_PERCENTILES)
        groups = [
            UsageGroup(
                key=a.key,
                **_stats([a], [codes.get(a.key, {})], pcts.get(a.key, NO_PERCENTILES)).model_dump(),
            )
            for a in aggs
        ]
        return UsageReport(
            from_=flt.start,
            to=flt.end,
            group_by=group_by,
            totals=_stats(aggs, codes.values(), total_pct),
            groups=groups,
        )


@dataclass(frozen=True, slots=True)
class CsvExport:
    filename: str
    chunks: AsyncIterator[str]


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_lines(rows: Iterable[UsageExportRow], *, header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.created_at.isoformat(),
                *(
                    _cell(v)
                    for v in (
                        r.request_id,
                        r.username,
                        r.model,
                        r.profile,
                        r.client,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.tokens_source,
                        r.ttft_ms,
                        r.latency_ms,
                        r.status_code,
                        r.error_code,
                        r.conversation_id,
                    )
                ),
            ]
        )
    return buf.getvalue()


class UsageExporter:
    """Streams usage rows as CSV in keyset pages, one short session per page.

    It owns its sessions because the body is sent after the request's session has closed,
    and a slow client must not hold a pooled connection between pages.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        page_rows: int = EXPORT_PAGE_ROWS,
    ) -> None:
        self.session_factory = session_factory
        self.page_rows = page_rows

    async def open(self, principal: Principal, query: UsageExportQuery) -> CsvExport:
        if query.all and not principal.is_admin:
            raise Forbidden("admin role required to export every user's usage")
        flt = UsageFilter(
            start=query.start, end=query.end, user_id=None if query.all else principal.user_id
        )
        # the first page is read now, so a database outage is still an error response
        first = await self._page(flt, None)
        last_day = (flt.end - timedelta(microseconds=1)).date()
        return CsvExport(
            filename=f"usage-{flt.start.date().isoformat()}-{last_day.isoformat()}.csv",
            chunks=self._chunks(flt, first),
        )

    async def _page(self, flt: UsageFilter, after: UsageExportRow | None) -> list[UsageExportRow]:
        async with self.session_factory() as session:
            return await UsageRepository(session).export_page(
                flt,
                after=None if after is None else (after.created_at, after.id),
                limit=self.page_rows,
            )

    async def _chunks(self, flt: UsageFilter, page: list[UsageExportRow]) -> AsyncIterator[str]:
        yield _csv_lines(page, header=True)
        while len(page) == self.page_rows:
            page = await self._page(flt, page[-1])
            if page:
                yield _csv_lines(page)
