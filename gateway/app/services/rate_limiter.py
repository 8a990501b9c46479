"""Per-user rate limits (SPEC §4): requests per minute, concurrent streams, tokens per day.

One Redis round trip admits a request: a Lua script checks the day's tokens, counts the request
in the user's minute window and takes a stream slot, atomically, so every gateway process on
the same Redis enforces one limit. (The `limits` library's strategies would take one round trip
per check and two for the headers; this path runs ~1,500 times a second.) Without Redis the
same rules run in process memory. Redis down: requests pass (fail open, logged, counted,
`/health` degraded) unless RATE_LIMIT_FAIL_CLOSED, then 503.

Tokens per day: an admitted request reserves its `max_tokens` bound on the day's counter
(`reserve`), and `release_soon` settles it to what was really used (the usage chunk's counts, or for
a cut stream the tokens the gateway relayed). Admission refuses once the counter (used plus
reserved) reaches the limit, so answers running at the same time cannot together overshoot the
day's budget by more than one answer's bound; without the reservation every stream admitted
while the counter was still low could run to its end (and cutting each before its usage chunk
used to cost nothing at all).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from app.core.config import Settings
from app.core.errors import AppError, RateLimited, ServiceUnavailable
from app.core.metrics import RATE_LIMIT_REJECTIONS, RATE_LIMIT_STORE_ERRORS
from app.services.auth import Principal
from app.services.redis_pipeliner import Commands, RedisPipeliner

log = structlog.get_logger()

WINDOW_S = 60
OVERLAP_ROOM = 2  # overlap only while more than this is left beyond what is in flight
ROOM_USERS = 10_000
STREAM_SLOT_TTL_S = 3600  # a crashed process's slots free themselves after an hour
REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# returns {verdict, count, ttl[, open streams]}:
# 0 admitted, 1 requests/minute, 2 streams, 3 tokens/day
_ADMIT_LUA = """
local rpm_limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local streams_limit, slot_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens_limit = tonumber(ARGV[5])
if tokens_limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= tokens_limit then return {3, used, redis.call('TTL', KEYS[3])} end
end
local count, ttl = 0, window
if rpm_limit > 0 then
  count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], window) end
  ttl = redis.call('TTL', KEYS[1])
  if count > rpm_limit then return {1, count, ttl} end
end
local open = 0
if streams_limit > 0 then
  open = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], slot_ttl)
  if open > streams_limit then
    redis.call('DECR', KEYS[2])
    return {2, open - 1, 1}
  end
end
return {0, count, ttl, open}
"""


class RateLimiterUnavailable(ServiceUnavailable):
    code = "rate_limiter_unavailable"


@dataclass(frozen=True, slots=True)
class Quota:
    requests_per_minute: int
    concurrent_streams: int
    tokens_per_day: int


@dataclass(slots=True)
class Admission:
    """A request let in; `release_soon()` it when its response is over."""

    user_id: int
    quota: Quota
    headers: dict[str, str] = field(default_factory=dict)
    holds_stream_slot: bool = False
    reserved_tokens: int = 0  # on `tokens_key`, settled by release_soon()
    tokens_key: str | None = None


@dataclass(slots=True)
class AdmitTicket:
    """An admission check under way (`RateLimiter.begin`); `settle` it exactly once."""

    user_id: int
    quota: Quota
    overlap: bool = False
    in_flight: bool = False  # counted in RateLimiter._checking until its verdict is in
    admission: Admission | None = None  # admitted (or nothing to check)
    refusal: AppError | None = None  # refused: `settle` raises it again
    verdict: tuple[int, int, int, int] | None = None  # in-memory counters: known at once
    future: asyncio.Future[list[Any]] | None = None
    keys: list[str] = field(default_factory=list)
    args: list[int] = field(default_factory=list)


class RateLimiter:
    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.settings = settings
        self.redis = redis
        self.prefix = settings.rate_limit_key_prefix
        self._pipeliner = RedisPipeliner(redis) if redis is not None else None
        self._admit_sha = hashlib.sha1(_ADMIT_LUA.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._memory = _MemoryCounters()
        self._room: dict[int, int] = {}  # user -> requests/streams left at the last verdict
        self._checking: dict[int, int] = {}  # user -> admission checks whose verdict is awaited
        self.rejections: dict[str, int] = {
            "requests_per_minute": 0,
            "streams": 0,
            "tokens_per_day": 0,
        }
        self.store_failures_total = 0
        self._last_failure_log = 0.0

    async def aclose(self) -> None:
        if self._pipeliner is not None:
            await self._pipeliner.aclose()

    def quota(self, principal: Principal) -> Quota:
        s = self.settings

        def pick(override: int | None, default: int) -> int:
            return default if override is None else override

        return Quota(
            pick(principal.requests_per_minute, s.rate_limit_requests_per_minute),
            pick(principal.max_concurrent_streams, s.rate_limit_concurrent_streams),
            pick(principal.tokens_per_day, s.rate_limit_tokens_per_day),
        )

    def _keys(self, user_id: int) -> list[str]:
        day = _utc_day()
        return [
            f"{self.prefix}:rpm:{user_id}",
            f"{self.prefix}:streams:{user_id}",
            f"{self.prefix}:tokens:{user_id}:{day}",
        ]

    def begin(self, principal: Principal) -> AdmitTicket:
        """Send the admission check now (one Lua call, pipelined); `settle` gives its verdict.

        `ticket.overlap` says the caller may start the upstream request before the verdict is
        in: this process saw the user admitted with room to spare (OVERLAP_ROOM) for what is
        in flight. The verdict is still the one rule: the request is answered only once it is
        admitted, and a refused one is cancelled before a byte of it reaches the client; the
        overlap only hides the round trip behind the model's time to first token."""
        quota = self.quota(principal)
        ticket = AdmitTicket(principal.user_id, quota)
        if not self.settings.rate_limit_enabled or not any(
            (quota.requests_per_minute, quota.concurrent_streams, quota.tokens_per_day)
        ):
            ticket.admission = Admission(principal.user_id, quota)
            return ticket
        keys = self._keys(principal.user_id)
        ticket.args = [
            quota.requests_per_minute,
            WINDOW_S,
            quota.concurrent_streams,
            STREAM_SLOT_TTL_S,
            quota.tokens_per_day,
        ]
        if self._pipeliner is None:
            ticket.verdict = self._memory.admit(keys, *ticket.args)
            return ticket
        ticket.keys = keys
        ticket.future = self._pipeliner.run(self._evalsha(keys, ticket.args))
        user = principal.user_id
        room = self._room.get(user)
        checking = self._checking.get(user, 0)  # this user's verdicts still on their way
        ticket.overlap = (
            room is not None
            and not quota.tokens_per_day
            and room - checking > OVERLAP_ROOM
            and not self.settings.rate_limit_fail_closed  # a 503 never reaches the model either
        )
        ticket.in_flight = True
        self._checking[user] = checking + 1
        return ticket

    async def admit(self, principal: Principal) -> Admission:
        """Count the request against the user's limits; raise RateLimited (429) when over."""
        return await self.settle(self.begin(principal))

    async def settle(self, ticket: AdmitTicket) -> Admission:
        """The verdict of `begin`: the Admission, or RateLimited (429) when over a limit (or
        RateLimiterUnavailable with RATE_LIMIT_FAIL_CLOSED); asked again, the same verdict."""
        if ticket.refusal is not None:
            raise ticket.refusal
        if ticket.admission is not None:
            return ticket.admission
        quota = ticket.quota
        admission = Admission(ticket.user_id, quota)
        if ticket.verdict is not None:
            verdict, count, ttl, opened = ticket.verdict
        else:
            assert ticket.future is not None
            try:
                try:
                    # shielded: a caller cancelled meanwhile leaves the check running, and
                    # whoever settles it later learns whether it took a stream slot (not
                    # needed, and not paid for, when the reply is in already)
                    future = ticket.future
                    result = future.result() if future.done() else await asyncio.shield(future)
                except NoScriptError:  # Redis restarted without the script: load it again
                    assert self._pipeliner is not None
                    await self._pipeliner.redis.script_load(_ADMIT_LUA)
                    ticket.future = self._pipeliner.run(self._evalsha(ticket.keys, ticket.args))
                    result = await asyncio.shield(ticket.future)
                verdict, count, ttl, opened = (int(v) for v in (*result[0], 0)[:4])
            except REDIS_ERRORS as exc:
                self._checked(ticket)
                try:
                    self._store_failed(exc)
                except AppError as refusal:  # fail closed
                    ticket.refusal = refusal
                    raise
                ticket.admission = admission
                return admission  # fail open
            self._checked(ticket)
        if quota.requests_per_minute:
            admission.headers = {
                "X-RateLimit-Limit": str(quota.requests_per_minute),
                "X-RateLimit-Remaining": str(max(0, quota.requests_per_minute - count)),
                "X-RateLimit-Reset": str(max(ttl, 1)),
            }
        if verdict == 0:
            admission.holds_stream_slot = quota.concurrent_streams > 0
            self._note_room(ticket.user_id, quota, count, opened)
            ticket.admission = admission
            return admission
        self._room.pop(ticket.user_id, None)
        reason, unit, limit, wait = {
            1: ("requests_per_minute", ("request", "per minute"), quota.requests_per_minute, ttl),
            2: ("streams", ("answer", "at once"), quota.concurrent_streams, 1),
            3: ("tokens_per_day", ("token", "per day"), quota.tokens_per_day, ttl),
        }[verdict]
        noun, span = unit
        message = f"{noun}{'' if limit == 1 else 's'} {span}"
        self.rejections[reason] += 1
        RATE_LIMIT_REJECTIONS.labels(reason).inc()
        wait = max(int(wait), 1)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(wait),
        }
        ticket.refusal = RateLimited(
            f"rate limit reached: at most {limit} {message}", retry_after_s=wait, headers=headers
        )
        raise ticket.refusal

    def _checked(self, ticket: AdmitTicket) -> None:
        """The ticket's verdict is in: it no longer counts against the user's room."""
        if ticket.in_flight:
            ticket.in_flight = False
            left = self._checking.pop(ticket.user_id, 1) - 1
            if left > 0:
                self._checking[ticket.user_id] = left

    def _note_room(self, user_id: int, quota: Quota, count: int, opened: int) -> None:
        """What is left of the user's minute and streams, as this verdict saw it."""
        room = [
            limit - used
            for limit, used in (
                (quota.requests_per_minute, count),
                (quota.concurrent_streams, opened),
            )
            if limit
        ]
        if len(self._room) >= ROOM_USERS and user_id not in self._room:
            self._room.clear()  # bounded: forgetting only means waiting for the next verdict
        self._room[user_id] = min(room) if room else OVERLAP_ROOM + 1

    def _evalsha(self, keys: list[str], args: list[int]) -> Callable[[Commands], None]:
        def queue(pipe: Commands) -> None:
            pipe.evalsha(self._admit_sha, len(keys), *keys, *args)

        return queue

    async def reserve(self, admission: Admission, tokens: int) -> None:
        """Hold `tokens` (the answer's bound) on the day's counter until `release_soon` settles
        it."""
        if not (self.settings.rate_limit_enabled and admission.quota.tokens_per_day) or tokens < 1:
            return
        tokens_key = self._keys(admission.user_id)[2]
        try:
            await self._add_tokens(tokens_key, tokens)
        except REDIS_ERRORS as exc:
            self._store_failed(exc, releasing=True)  # admitted already: counted at release
            return
        admission.reserved_tokens, admission.tokens_key = tokens, tokens_key

    async def _add_tokens(self, tokens_key: str, tokens: int) -> None:
        if self.redis is None:
            self._memory.release(None, tokens_key, tokens)
            return
        assert self._pipeliner is not None

        def queue(pipe: Commands) -> None:
            pipe.incrby(tokens_key, tokens)
            pipe.expire(tokens_key, _seconds_to_midnight() + 3600)

        await self._pipeliner.run(queue)

    def release_soon(
        self, admission: Admission, tokens: int | None
    ) -> asyncio.Future[list[Any]] | None:
        """The response is over: free the stream slot, settle the day's tokens (used - reserved).
        Queued on the pipeliner (no task of its own); a Redis failure is counted, not raised.
        Once per admission: a second call finds nothing held."""
        _rpm, streams_key, tokens_key = self._keys(admission.user_id)
        if admission.tokens_key is not None:
            tokens_key = admission.tokens_key  # the day it was reserved on
        delta = (tokens or 0) if admission.quota.tokens_per_day else 0
        delta -= admission.reserved_tokens
        admission.reserved_tokens = 0
        slot, admission.holds_stream_slot = admission.holds_stream_slot, False
        if not slot and not delta:
            return None
        if self._pipeliner is None:
            self._memory.release(streams_key if slot else None, tokens_key, delta)
            return None

        def queue(pipe: Commands) -> None:
            if slot:
                pipe.decr(streams_key)
            if delta:
                pipe.incrby(tokens_key, delta)
                pipe.expire(tokens_key, _seconds_to_midnight() + 3600)

        sent = self._pipeliner.run(queue)
        sent.add_done_callback(self._released)
        return sent

    def _released(self, sent: asyncio.Future[list[Any]]) -> None:
        if sent.cancelled():
            return
        exc = sent.exception()
        if isinstance(exc, REDIS_ERRORS):
            self._store_failed(exc, releasing=True)
        elif exc is not None:
            log.error("rate-limit release failed", error=repr(exc))

    def _store_failed(self, exc: BaseException, *, releasing: bool = False) -> None:
        # nobody's request goes to the model server before its verdict again until the store
        # has answered for that user (fail closed refuses them all; fail open admits them)
        self._room.clear()
        self.store_failures_total += 1
        RATE_LIMIT_STORE_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_failure_log > 10:
            self._last_failure_log = now
            log.warning(
                "rate-limit store unavailable",
                error=type(exc).__name__,
                fail_closed=self.settings.rate_limit_fail_closed,
            )
        if self.settings.rate_limit_fail_closed and not releasing:
            raise RateLimiterUnavailable(
                "the rate limiter is unavailable, try again shortly", headers={"Retry-After": "5"}
            ) from exc


_day_cache: tuple[int, str] = (-1, "")


def _utc_day() -> str:
    """Today (UTC) as YYYYMMDD; formatted once a day, not on each of a request's three calls."""
    global _day_cache
    day = int(time.time() // 86400)
    if day != _day_cache[0]:
        _day_cache = (day, datetime.fromtimestamp(day * 86400, UTC).strftime("%Y%m%d"))
    return _day_cache[1]


def _seconds_to_midnight() -> int:
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - now).total_seconds()) + 1


class _MemoryCounters:
    """The Lua script's rules for one process (local mode, no Redis)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)

    def _get(self, key: str) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > time.monotonic() else 0

    def _ttl(self, key: str) -> int:
        _, expires = self._values.get(key, (0, 0.0))
        return max(0, int(expires - time.monotonic()))

    def _incr(self, key: str, amount: int, ttl: float, *, refresh: bool = False) -> int:
        now = time.monotonic()
        value, expires = self._values.get(key, (0, 0.0))
        if expires <= now:
            value, expires = 0, now + ttl
        elif refresh:
            expires = now + ttl
        value += amount
        self._values[key] = (value, expires)
        return value

    def admit(
        self, keys: list[str], rpm: int, window: int, streams: int, slot_ttl: int, tokens: int
    ) -> tuple[int, int, int, int]:
        rpm_key, streams_key, tokens_key = keys
        if tokens > 0 and self._get(tokens_key) >= tokens:
            return 3, self._get(tokens_key), self._ttl(tokens_key), 0
        count, ttl = 0, window
        if rpm > 0:
            count = self._incr(rpm_key, 1, window)
            ttl = self._ttl(rpm_key)
            if count > rpm:
                return 1, count, ttl, 0
        opened = 0
        if streams > 0:
            opened = self._incr(streams_key, 1, slot_ttl, refresh=True)
            if opened > streams:
                self._incr(streams_key, -1, slot_ttl)
                return 2, opened - 1, 1, 0
        return 0, count, ttl, opened

    def release(self, streams_key: str | None, tokens_key: str, tokens: int) -> None:
        if streams_key is not None:
            self._incr(streams_key, -1, STREAM_SLOT_TTL_S)
        if tokens:
            self._incr(tokens_key, tokens, _seconds_to_midnight() + 3600, refresh=True)
