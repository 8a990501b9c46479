"""The rate limiter's Redis commands, many requests' at a time, on one connection of their own.

Each request of the chat path needs one Redis command to be admitted and one when it ends. Sent
one by one, redis-py's per-command overhead cost the gateway a quarter of its throughput at
c=32. Here the commands of every request that queued some while the previous batch was on the
wire go out together: one write, the replies read in order, one batch in flight at a time (so
the busier the gateway, the larger the batch), each command packed once as it is queued.
redis-py's connection does the rest of the protocol (AUTH, SELECT, TLS from REDIS_URL, hiredis
parsing, the socket timeout); its pipeline and pool are left out of this path: their bookkeeping
per batch (retry wrapper, observability hooks, pool lock) cost more than the commands themselves.

A connection Redis dropped while it sat idle (a Redis restart) is found closed before a batch is
written and replaced; a failure once a batch is on its way fails that batch's callers (the
limiter then fails open or closed): a batch is never sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

STALE_CHECK_S = 0.5  # a connection idle this long is checked before a batch is written


class Commands(list[bytes]):
    """What one caller queues: the commands the limiter uses, each packed (RESP) as it is
    added."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int) -> None:
        self.append(_pack(b"EVALSHA", sha, numkeys, *keys_and_args))

    def incrby(self, key: str, amount: int) -> None:
        self.append(_pack(b"INCRBY", key, amount))

    def expire(self, key: str, seconds: int) -> None:
        self.append(_pack(b"EXPIRE", key, seconds))

    def decr(self, key: str) -> None:
        self.append(_pack(b"DECR", key))


def _pack(*args: bytes | str | int) -> bytes:
    """One command in Redis's protocol: an array of bulk strings (str as UTF-8, int in decimal)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


Queue = Callable[[Commands], None]


class RedisPipeliner:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[Queue, asyncio.Future[list[Any]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._last_used = 0.0
        self._closed = False

    def run(self, queue: Queue) -> asyncio.Future[list[Any]]:
        """Queue commands (`queue(commands)` adds them); the future gets their replies, or the
        first error among them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self._closed:  # shutting down: the limiter fails open or closed as for an outage
            future.set_exception(RedisConnectionError("the rate limiter is closed"))
            return future
        self._pending.append((queue, future))
        if self._task is None:  # it starts next loop turn: this turn's callers join in
            self._task = loop.create_task(self._drain())
        return future

    async def aclose(self, wait_s: float = 2.0) -> None:
        """Send what is queued (releases of the last answers), then close the connection; what
        could not be sent in `wait_s` fails, and so does anything queued afterwards."""
        self._closed = True
        task = self._task
        if task is not None:
            await asyncio.wait((task,), timeout=wait_s)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(RedisConnectionError("the rate limiter is closed"))
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._execute(batch)
        finally:
            self._task = None

    async def _execute(self, batch: list[tuple[Queue, asyncio.Future[list[Any]]]]) -> None:
        commands = Commands()
        counts: list[int] = []
        try:
            for queue, _ in batch:
                before = len(commands)
                queue(commands)
                counts.append(len(commands) - before)
            results = await self._round_trip(commands)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for (_, future), count in zip(batch, counts, strict=True):
            part = results[start : start + count]
            start += count
            if future.done():
                continue
            error = next((r for r in part if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(part)

    async def _round_trip(self, commands: Commands) -> list[Any]:
        packed = b"".join(commands)
        conn = self._conn
        if conn is None:
            pool = self.redis.connection_pool
            conn = self._conn = pool.connection_class(**pool.connection_kwargs)
        loop = asyncio.get_running_loop()
        try:
            # idle a while: Redis may have dropped it (a restart). Anything readable now (its
            # close) means so: a new connection, before anything is sent. A batch is never sent
            # twice, so an INCR or DECR never lands twice.
            idle = loop.time() - self._last_used > STALE_CHECK_S
            if conn.is_connected and idle and await conn.can_read():
                await conn.disconnect()
            await conn.connect()  # type: ignore[no-untyped-call]  # AUTH, SELECT... when new
            await conn.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the connection is fine
                    results.append(exc)
        except BaseException:  # failed, timed out, cancelled: what is on the wire is unknown
            await conn.disconnect()
            raise
        self._last_used = loop.time()
        return results
