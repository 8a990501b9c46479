"""The rate limiter's own Redis path (`RedisPipeliner`) against the real Redis: commands packed
as redis-py packs them, one round trip for a loop turn's callers, an error reply failing only
its caller, a connection Redis dropped while idle replaced, queued work sent before closing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from app.services.rate_limiter import Admission, Quota, RateLimiter
from app.services.redis_pipeliner import STALE_CHECK_S, Commands, RedisPipeliner, _pack
from tests.conftest import SHARED_REDIS, wait_until
from tests.tcp_proxy import TcpProxy


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(SHARED_REDIS)
    prefix = f"test-pipe-{uuid.uuid4().hex[:8]}"
    client.prefix = prefix  # type: ignore[attr-defined]
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def pipeliner(redis: Redis) -> AsyncIterator[RedisPipeliner]:
    pipeliner = RedisPipeliner(redis)
    yield pipeliner
    await pipeliner.aclose()


def test_packed_as_redis_py_packs() -> None:
    args = ("EVALSHA", "ab" * 20, 3, "p:rpm:1", "p:tokens:1:é", 0, 60, -5)
    assert _pack(*args) == b"".join(Connection().pack_command(*args))


async def test_one_round_trip_for_the_callers_of_a_loop_turn(
    redis: Redis, pipeliner: RedisPipeliner
) -> None:
    key = f"{redis.prefix}:n"  # type: ignore[attr-defined]
    trips = 0
    round_trip = pipeliner._round_trip

    async def counted(commands: Commands) -> list[object]:
        nonlocal trips
        trips += 1
        return await round_trip(commands)

    pipeliner._round_trip = counted  # type: ignore[method-assign]
    futures = [pipeliner.run(lambda c: c.incrby(key, 1)) for _ in range(5)]
    assert [r[0] for r in await asyncio.gather(*futures)] == [1, 2, 3, 4, 5]
    assert trips == 1


async def test_an_error_reply_fails_only_its_caller(
    redis: Redis, pipeliner: RedisPipeliner
) -> None:
    key = f"{redis.prefix}:m"  # type: ignore[attr-defined]
    bad = pipeliner.run(lambda c: c.evalsha("0" * 40, 0))
    good = pipeliner.run(lambda c: c.incrby(key, 7))
    with pytest.raises(NoScriptError):
        await bad
    assert await good == [7]
    assert await pipeliner.run(lambda c: c.decr(key)) == [6]  # the connection is fine


async def test_a_connection_dropped_while_idle_is_replaced(
    redis: Redis, pipeliner: RedisPipeliner
) -> None:
    key = f"{redis.prefix}:k"  # type: ignore[attr-defined]
    assert await pipeliner.run(lambda c: c.incrby(key, 1)) == [1]
    (conn_id,) = await pipeliner.run(lambda c: c.append(_pack(b"CLIENT", b"ID")))
    assert await redis.execute_command("CLIENT", "KILL", "ID", conn_id) == 1
    pipeliner._last_used -= STALE_CHECK_S  # it sat idle: checked before the next batch
    assert await pipeliner.run(lambda c: c.incrby(key, 1)) == [2]  # on a new connection
    (new_id,) = await pipeliner.run(lambda c: c.append(_pack(b"CLIENT", b"ID")))
    assert new_id != conn_id


async def test_queued_releases_are_sent_before_closing(redis: Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_settings

    prefix = redis.prefix  # type: ignore[attr-defined]
    settings = make_settings(
        "sqlite+aiosqlite://", tmp_path, redis_url=SHARED_REDIS, rate_limit_key_prefix=prefix
    )
    limiter = RateLimiter(settings, redis)
    await redis.set(f"{prefix}:streams:9", 3)
    admission = Admission(9, Quota(0, 5, 0), holds_stream_slot=True)
    limiter.release_soon(admission, None)
    limiter.release_soon(admission, None)  # once per admission: nothing held any more
    await limiter.aclose()  # at shutdown: what is queued goes out first
    assert int(await redis.get(f"{prefix}:streams:9") or 0) == 2


async def test_a_batch_lost_on_its_way_back_is_not_sent_twice(redis: Redis) -> None:
    """Redis ran it but the reply never came: its callers fail (the limiter fails open or
    closed); sending it again would count an INCR or DECR twice."""
    key = f"{redis.prefix}:once"  # type: ignore[attr-defined]
    proxy = TcpProxy(6379)
    await proxy.start()
    via_proxy = Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0")
    pipeliner = RedisPipeliner(via_proxy)
    try:
        assert await pipeliner.run(lambda c: c.incrby(key, 1)) == [1]
        proxy.hold_replies()
        lost = pipeliner.run(lambda c: c.incrby(key, 1))

        async def reached_redis() -> bool:
            return proxy.held > 0

        await wait_until(reached_redis, timeout=5)
        proxy.drop_connections()  # the reply is lost with the connection
        proxy.release_replies()  # (a new connection would work)
        with pytest.raises(RedisConnectionError):
            await lost
        assert int(await redis.get(key) or 0) == 2  # ran once, not again
        assert await pipeliner.run(lambda c: c.incrby(key, 1)) == [3]  # and the next batch runs
    finally:
        await pipeliner.aclose()
        await via_proxy.aclose()
        if proxy.running:
            await proxy.stop()


async def test_closed_it_fails_what_is_queued_and_what_comes_later(
    redis: Redis, pipeliner: RedisPipeliner
) -> None:
    key = f"{redis.prefix}:c"  # type: ignore[attr-defined]
    assert await pipeliner.run(lambda c: c.incrby(key, 1)) == [1]
    await pipeliner.aclose()
    with pytest.raises(RedisConnectionError):
        await pipeliner.run(lambda c: c.incrby(key, 1))
    assert pipeliner._conn is None  # nothing reopened
