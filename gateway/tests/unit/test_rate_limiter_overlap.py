"""When the limiter lets a request go on to the model server before its verdict is in
(`AdmitTicket.overlap`): only for a user this process saw admitted with room to spare, never
for more requests at once than that room, never with a token budget, never after a refusal.
The verdict itself is the same Lua call either way (real Redis, own key prefix)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from app.core.errors import RateLimited
from app.services.auth import Principal
from app.services.rate_limiter import OVERLAP_ROOM, RateLimiter
from tests.conftest import SHARED_REDIS, make_settings
from tests.tcp_proxy import TcpProxy


def _user(user_id: int, **limits: int) -> Principal:
    return Principal(user_id, f"u{user_id}", "user", "jwt", **limits)  # type: ignore[arg-type]


async def _overlaps(limiter: RateLimiter, user: Principal) -> bool:
    """Would the next request overlap? (its check is settled: every ticket is)"""
    ticket = limiter.begin(user)
    with contextlib.suppress(RateLimited):
        await limiter.settle(ticket)
    return ticket.overlap


@contextlib.asynccontextmanager
async def _limiter(
    tmp_path: Path, prefix: str, redis_url: str = SHARED_REDIS, **limits: Any
) -> AsyncIterator[RateLimiter]:
    """A limiter on Redis at `redis_url` (keys under `prefix`), closed with its client."""
    redis = Redis.from_url(redis_url, socket_timeout=2)
    settings = make_settings(
        "sqlite+aiosqlite://",
        tmp_path,
        redis_url=SHARED_REDIS,
        rate_limit_key_prefix=prefix,
        rate_limit_requests_per_minute=100,
        **limits,
    )
    limiter = RateLimiter(settings, redis)
    try:
        yield limiter
    finally:
        await limiter.aclose()
        await redis.aclose()


@pytest.fixture
async def limiter(tmp_path: Path, redis_prefix: str) -> AsyncIterator[RateLimiter]:
    async with _limiter(
        tmp_path, redis_prefix, rate_limit_concurrent_streams=10, rate_limit_tokens_per_day=0
    ) as limiter:
        yield limiter


async def test_no_overlap_for_a_user_not_seen_yet(limiter: RateLimiter) -> None:
    ticket = limiter.begin(_user(1))
    assert not ticket.overlap
    admission = await limiter.settle(ticket)
    assert admission.headers["X-RateLimit-Remaining"] == "99"
    assert await _overlaps(limiter, _user(2)) is False  # another user: still unknown


async def test_overlap_once_admitted_with_room_and_only_for_that_room(
    limiter: RateLimiter,
) -> None:
    user = _user(3, requests_per_minute=6)
    await limiter.settle(limiter.begin(user))  # count 1: room for 5 more
    tickets = [limiter.begin(user) for _ in range(4)]
    # room 5: overlap while more than OVERLAP_ROOM would be left beyond those in flight
    assert [t.overlap for t in tickets] == [i < 5 - OVERLAP_ROOM for i in range(4)]
    for t in tickets:
        await limiter.settle(t)
    assert limiter._checking == {}  # every check settled
    # count 5 of 6: room 1, so the next one waits for its verdict
    assert await _overlaps(limiter, user) is False


async def test_the_verdict_still_refuses_an_overlapping_request(limiter: RateLimiter) -> None:
    user = _user(4, requests_per_minute=10)
    await limiter.settle(limiter.begin(user))
    redis = limiter.redis
    assert redis is not None
    # another gateway process used the rest of the minute meanwhile
    await redis.set(f"{limiter.prefix}:rpm:4", 10, keepttl=True)
    ticket = limiter.begin(user)
    assert ticket.overlap
    with pytest.raises(RateLimited):
        await limiter.settle(ticket)
    with pytest.raises(RateLimited):  # asked again: the same verdict, not a second count
        await limiter.settle(ticket)
    assert int(await redis.get(f"{limiter.prefix}:rpm:4") or 0) == 11
    assert await _overlaps(limiter, user) is False  # refused: no overlap until admitted again


async def test_streams_room_counts_too(limiter: RateLimiter) -> None:
    user = _user(5, max_concurrent_streams=3)
    await limiter.settle(limiter.begin(user))  # 1 of 3 streams open: room 2
    assert await _overlaps(limiter, user) is False


async def test_never_with_a_token_budget(limiter: RateLimiter) -> None:
    user = _user(6, tokens_per_day=1000)
    await limiter.settle(limiter.begin(user))
    assert await _overlaps(limiter, user) is False  # its reservation needs the verdict first


async def test_never_with_in_memory_counters(tmp_path: Path) -> None:
    limiter = RateLimiter(make_settings("sqlite+aiosqlite://", tmp_path), None)
    user = _user(7, requests_per_minute=100)
    await limiter.settle(limiter.begin(user))
    ticket = limiter.begin(user)
    assert not ticket.overlap and ticket.verdict is not None  # known at once: nothing to hide
    await limiter.settle(ticket)


async def test_a_check_counts_against_the_room_until_its_verdict_is_in(
    limiter: RateLimiter,
) -> None:
    user = _user(8, requests_per_minute=100)
    await limiter.settle(limiter.begin(user))
    first = limiter.begin(user)
    settling = asyncio.create_task(limiter.settle(first))
    await asyncio.sleep(0)  # settle is waiting for the reply now
    assert not settling.done()
    assert limiter._checking == {8: 1}  # still on its way: still counted
    await settling
    assert limiter._checking == {}


async def test_a_caller_cancelled_before_the_verdict_leaves_no_slot_behind(
    limiter: RateLimiter,
) -> None:
    user = _user(10, max_concurrent_streams=5)
    ticket = limiter.begin(user)
    waiting = asyncio.create_task(limiter.settle(ticket))
    await asyncio.sleep(0)
    waiting.cancel()  # e.g. the server's shutdown cancels the request
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # whoever cleans up learns the verdict: the slot it took, so it can give it back
    admission = await limiter.settle(ticket)
    assert admission.holds_stream_slot
    sent = limiter.release_soon(admission, None)
    assert sent is not None
    await sent
    redis = limiter.redis
    assert redis is not None
    assert int(await redis.get(f"{limiter.prefix}:streams:10") or 0) == 0


async def test_no_overlap_for_anyone_once_the_store_failed(
    tmp_path: Path, redis_prefix: str
) -> None:
    proxy = TcpProxy(6379)
    await proxy.start()
    try:
        async with _limiter(
            tmp_path,
            redis_prefix,
            f"redis://127.0.0.1:{proxy.port}/0",
            rate_limit_concurrent_streams=100,
        ) as limiter:
            user = _user(11)
            await limiter.settle(limiter.begin(user))
            assert await _overlaps(limiter, user)
            await proxy.stop()  # Redis unreachable: fail open lets it through, unchecked
            assert not (await limiter.settle(limiter.begin(user))).holds_stream_slot
            await proxy.start()
            # no request goes upstream before its verdict until the store has answered again
            assert await _overlaps(limiter, user) is False
            assert await _overlaps(limiter, user) is True
    finally:
        if proxy.running:
            await proxy.stop()


async def test_never_when_failing_closed(tmp_path: Path, redis_prefix: str) -> None:
    """RATE_LIMIT_FAIL_CLOSED: a request refused because the store failed (503) must not have
    reached the model server either, so every request waits for its verdict."""
    async with _limiter(tmp_path, redis_prefix, rate_limit_fail_closed=True) as limiter:
        user = _user(12)
        await limiter.settle(limiter.begin(user))
        assert await _overlaps(limiter, user) is False
