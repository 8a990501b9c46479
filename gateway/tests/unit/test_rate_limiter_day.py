"""The day in the rate limiter's token keys is formatted once a day, and changes at midnight UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.services import rate_limiter


def test_utc_day_is_today_and_rolls_over_at_midnight_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rate_limiter._utc_day() == datetime.now(UTC).strftime("%Y%m%d")
    midnight = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    monkeypatch.setattr(rate_limiter.time, "time", lambda: midnight - 0.001)
    assert rate_limiter._utc_day() == "20261126"
    monkeypatch.setattr(rate_limiter.time, "time", lambda: midnight)
    assert rate_limiter._utc_day() == "20261127"
    monkeypatch.setattr(rate_limiter.time, "time", lambda: midnight + 86399.9)
    assert rate_limiter._utc_day() == "20261127"
