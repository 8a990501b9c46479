"""Wire types of the usage reports (SPEC §3 Usage)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.db.base import utcnow
from app.schemas.wire import RequestModel, RowId

DEFAULT_WINDOW = timedelta(days=30)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_bound(value: object, *, end_of_day: bool) -> object:
    """An ISO date or datetime → an aware UTC datetime (naive means UTC).

    A bare date covers the whole day: as `from` it is that midnight, as `to` the next one.
    """
    try:
        if isinstance(value, str) and _DATE_ONLY.match(value.strip()):
            day = date.fromisoformat(value.strip())
            value = datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=int(end_of_day))
        elif isinstance(value, str) and value.strip():
            value = datetime.fromisoformat(value.strip())  # ValueError → 422
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # the day after 9999-12-31, or an offset past year 1
        raise ValueError("date out of range") from exc
    return value


class UsageWindow(RequestModel):
    """`?from=&to=`: the half-open interval [from, to); default the last 30 days."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime | None = Field(
        default=None, alias="from", description="ISO date or datetime (UTC when naive)"
    )
    to: datetime | None = Field(
        default=None, description="ISO date (the whole day included) or datetime; default now"
    )

    @field_validator("from_", mode="before")
    @classmethod
    def _from(cls, value: object) -> object:
        return _parse_bound(value, end_of_day=False)

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: object) -> object:
        return _parse_bound(value, end_of_day=True)

    @model_validator(mode="after")
    def _resolve(self) -> UsageWindow:
        if self.to is None:
            self.to = utcnow()
        if self.from_ is None:
            try:
                self.from_ = self.to - DEFAULT_WINDOW
            except OverflowError as exc:
                raise ValueError("`to` is too early") from exc
        if self.from_ >= self.to:
            raise ValueError("`from` must be before `to`")
        return self

    @property
    def start(self) -> datetime:
        assert self.from_ is not None  # resolved by the validator
        return self.from_

    @property
    def end(self) -> datetime:
        assert self.to is not None
        return self.to


class UsageQuery(UsageWindow):
    group_by: Literal["day", "model"] = "day"


class AdminUsageQuery(UsageWindow):
    group_by: Literal["day", "model", "user"] = "day"
    user_id: RowId | None = Field(default=None, description="only this user's rows")


class UsageExportQuery(UsageWindow):
    all: bool = Field(default=False, description="every user's rows (admins only)")


class UsageStats(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int = Field(description="rows with status_code >= 400, except 499 (cancelled)")
    cancelled: int = Field(description="requests the client closed (499): not errors")
    errors_by_code: dict[str, int] = Field(
        description="error rows per error code (the status code where the row has none)"
    )
    avg_ttft_ms: float | None
    avg_latency_ms: float | None
    p50_ttft_ms: float | None = Field(description="percentiles over completed requests (< 400)")
    p95_ttft_ms: float | None
    p99_ttft_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None


class UsageGroup(UsageStats):
    key: str | None = Field(
        description="UTC day (YYYY-MM-DD), model, or username (null: unknown/deleted)"
    )


class UsageReport(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    group_by: str
    totals: UsageStats
    groups: list[UsageGroup]


CSV_COLUMNS = (
    "created_at",
    "request_id",
    "username",
    "model",
    "profile",
    "client",
    "prompt_tokens",
    "completion_tokens",
    "tokens_source",
    "ttft_ms",
    "latency_ms",
    "status_code",
    "error_code",
    "conversation_id",
)
