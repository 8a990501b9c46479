"""Usage rows (one per chat request), written in batches off the request path.

`record()` only appends to an in-memory queue: it is called on the chat hot path and must never
wait for, or fail because of, the database. One background task drains the queue in batches
(one multi-row INSERT each, in its own short transaction) when a full batch is waiting or when
the oldest waiting row has waited `usage_flush_interval_ms`. A database outage keeps the rows
queued and retries with backoff; `stop()` writes whatever is left before the engine goes away.

Rows are taken from the front of the queue only once written (or found unwritable), so a failed
batch is simply retried and the queue bound covers rows in flight too. Single event-loop use:
`record()` is not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.errors import is_database_outage
from app.core.metrics import USAGE_QUEUE_DEPTH, USAGE_ROWS_DROPPED
from app.db.base import utcnow
from app.repositories.usage import UsageRepository

log = structlog.get_logger()

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
STOP_TIMEOUT_S = 10.0
DROP_LOG_INTERVAL_S = 10.0
# column widths of the `requests` table: an over-long value is cut, not a failed batch
_TEXT_LIMITS = {
    "request_id": 64,
    "model": 200,
    "profile": 100,
    "client": 8,
    "error_code": 64,
    "tokens_source": 8,
    "conversation_id": 36,
}


@dataclass(slots=True)
class UsageRecord:
    status_code: int
    user_id: int | None = None
    request_id: str | None = None
    conversation_id: str | None = None
    model: str | None = None
    profile: str | None = None
    client: str = "api"  # "ui" | "api"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_source: str | None = None  # "upstream" (the model server's usage) | "gateway" (counted)
    ttft_ms: int | None = None
    answer_ttft_ms: int | None = None
    latency_ms: int | None = None
    error_code: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "status_code": self.status_code,
            "user_id": self.user_id,
            "request_id": self.request_id,
            "conversation_id": self.conversation_id,
            "model": self.model,
            "profile": self.profile,
            "client": self.client,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_source": self.tokens_source,
            "ttft_ms": self.ttft_ms,
            "answer_ttft_ms": self.answer_ttft_ms,
            "latency_ms": self.latency_ms,
            "error_code": self.error_code,
            "created_at": (
                self.created_at.replace(tzinfo=UTC)
                if self.created_at.tzinfo is None
                else self.created_at
            ),
        }
        for name, limit in _TEXT_LIMITS.items():
            value = row[name]
            if isinstance(value, str) and len(value) > limit:
                row[name] = value[:limit]
        return row


def _is_row_problem(exc: BaseException) -> bool:
    """A failure caused by the rows themselves, not by the database: retrying would not help.

    Anything else (outage, missing table mid-migration, disk full...) keeps the rows queued.
    """
    if isinstance(exc, IntegrityError | DataError | TypeError | ValueError):
        return True
    # a value the driver or a column type refused before it reached the database
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


class UsageRecorder:
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.batch_size = settings.usage_batch_size
        self.flush_interval_s = settings.usage_flush_interval_ms / 1000
        self.queue_max = settings.usage_queue_max
        self.stop_timeout_s = STOP_TIMEOUT_S
        # awaited before each batch (the chat writer's flush, so referenced conversations exist)
        self.before_batch: Callable[[], Awaitable[None]] | None = None
        self.written_total = 0
        self.dropped_total = 0
        self.failed_batches_total = 0
        # (monotonic time queued, row); rows leave from the left once written or unwritable
        self._queue: deque[tuple[float, UsageRecord]] = deque()
        self._accepted = 0  # rows ever queued
        self._done = 0  # rows ever taken off the queue (written or dropped as unwritable)
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False
        self._drops_unlogged = 0
        self._last_drop_log = -DROP_LOG_INTERVAL_S

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # --- the hot path -------------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        """Queue one usage row. O(1); never waits, never raises, never touches the database."""
        try:
            queue = self._queue
            if self._closed or len(queue) >= self.queue_max or not isinstance(rec, UsageRecord):
                self._drop(1)
                return
            queue.append((time.monotonic(), rec))
            self._accepted += 1
            depth = len(queue)
            USAGE_QUEUE_DEPTH.inc()
            if depth == 1 or depth >= self.batch_size:
                self._wake.set()
        except Exception:  # a usage row is never worth failing a chat request for
            with contextlib.suppress(Exception):
                log.exception("usage record failed")

    def _drop(self, count: int) -> None:
        self.dropped_total += count
        USAGE_ROWS_DROPPED.inc(count)
        self._drops_unlogged += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.error(
                "usage rows dropped",
                reason="recorder stopped" if self._closed else "queue full",
                dropped=self._drops_unlogged,
                dropped_total=self.dropped_total,
                queue_max=self.queue_max,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        """Stop the background loop and write every queued row (rows recorded meanwhile too)."""
        if self._closed:
            return
        self._stop_requested.set()
        self._wake.set()
        try:
            await self.flush(self.stop_timeout_s, until_empty=True)
        except TimeoutError:
            lost = len(self._queue)
            log.error("usage rows lost at shutdown: database unavailable", lost=lost)
            self.dropped_total += lost
            self._done += lost
            self._queue.clear()
        finally:
            self._closed = True
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def flush(
        self,
        timeout: float = 10,  # noqa: ASYNC109 - one deadline across retries and backoff
        *,
        until_empty: bool = False,
    ) -> None:
        """Write every row queued now (with `until_empty`, also rows queued meanwhile).

        Retries through a database outage until `timeout`, then raises TimeoutError; the rows
        stay queued.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._accepted
        backoff = BACKOFF_START_S
        while self._queue and (until_empty or self._done < target):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._queue)} usage rows not written in {timeout}s")
            scope = asyncio.timeout(remaining)
            try:
                async with scope:
                    await self._write_next_batch()
                backoff = BACKOFF_START_S
            except Exception as exc:
                if scope.expired():  # our deadline, not a driver's own timeout
                    raise TimeoutError(
                        f"{len(self._queue)} usage rows not written in {timeout}s"
                    ) from None
                self._note_failure(exc)
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    # --- the writer ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop_requested.is_set():
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self.batch_size:
                wait = self._queue[0][0] + self.flush_interval_s - time.monotonic()
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
            try:
                await self._write_next_batch()
                backoff = BACKOFF_START_S
            except Exception as exc:
                self._note_failure(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _note_failure(self, exc: BaseException) -> None:
        self.failed_batches_total += 1
        if self._failing:
            return
        self._failing = True
        if is_database_outage(exc):
            log.warning(
                "usage write failed, will retry",
                error=type(exc).__name__,
                detail=str(exc)[:200],
                queued=len(self._queue),
            )
        else:
            log.error("usage write failed, will retry", queued=len(self._queue), exc_info=exc)

    async def _write_next_batch(self) -> None:
        """Write the batch at the front of the queue; on a database failure raise, rows kept."""
        async with self._write_lock:  # flush() and the loop never write the same rows
            batch = [rec for _, rec in itertools.islice(self._queue, self.batch_size)]
            if not batch:
                return
            if self.before_batch is not None:
                # rows point at conversations the chat writer may still hold: write those first
                await self.before_batch()
            try:
                await self._insert(batch)
            except Exception as exc:
                if not _is_row_problem(exc):
                    raise
                try:
                    # a conversation or user deleted meanwhile fails the whole insert
                    await self._clear_dangling_references(batch)
                    await self._insert(batch)
                except Exception as retry_exc:
                    if not _is_row_problem(retry_exc):
                        raise
                    await self._insert_one_by_one(batch)
                    return
            self._taken(len(batch), written=len(batch))

    async def _insert(self, batch: list[UsageRecord]) -> None:
        async with self.session_factory.begin() as session:
            await UsageRepository(session).insert_many([rec.as_row() for rec in batch])

    async def _clear_dangling_references(self, batch: list[UsageRecord]) -> None:
        async with self.session_factory() as session:
            repo = UsageRepository(session)
            conversations = await repo.existing_conversation_ids(
                {r.conversation_id for r in batch if r.conversation_id is not None}
            )
            users = await repo.existing_user_ids(
                {r.user_id for r in batch if r.user_id is not None}
            )
        for rec in batch:
            if rec.conversation_id is not None and rec.conversation_id not in conversations:
                rec.conversation_id = None
            if rec.user_id is not None and rec.user_id not in users:
                rec.user_id = None

    async def _insert_one_by_one(self, batch: list[UsageRecord]) -> None:
        """Isolate the rows that can never be written, so they do not hold back the others."""
        for rec in batch:
            try:
                try:
                    await self._insert([rec])
                except Exception as exc:
                    if not _is_row_problem(exc):
                        raise
                    await self._clear_dangling_references([rec])
                    await self._insert([rec])
            except Exception as exc:
                if not _is_row_problem(exc):
                    raise  # the rows before this one are written and off the queue
                log.error(
                    "usage row dropped: not writable",
                    request_id=rec.request_id,
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                )
                self._taken(1, written=0)
            else:
                self._taken(1, written=1)

    def _taken(self, count: int, *, written: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._done += count
        self.written_total += written
        self.dropped_total += count - written
        USAGE_QUEUE_DEPTH.dec(count)
        if count > written:
            USAGE_ROWS_DROPPED.inc(count - written)
        if self._failing and written:
            self._failing = False
            log.info("usage writes recovered", queued=len(self._queue))
