"""Redis commands of concurrent requests, sent in one pipeline per event-loop turn.

Each request of the chat path needs one Redis command to be admitted and one when it ends. Sent
one by one, redis-py's per-command overhead cost the gateway a quarter of its throughput at
c=32; queued here and written together, the requests that became ready in the same loop turn
share one write, one read and one pass of the connection pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

Queue = Callable[[Pipeline], None]


class RedisPipeliner:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[Queue, asyncio.Future[list[Any]]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, queue: Queue) -> asyncio.Future[list[Any]]:
        """Queue commands (`queue(pipe)` adds them); the future gets their results, or the
        first error among them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((queue, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[tuple[Queue, asyncio.Future[list[Any]]]]) -> None:
        counts: list[int] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue, _ in batch:
                    before = len(pipe.command_stack)
                    queue(pipe)
                    counts.append(len(pipe.command_stack) - before)
                results = await pipe.execute(raise_on_error=False)
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
