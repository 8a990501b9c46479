"""RETENTION_DAYS: the purge of old conversations (with their messages) and usage rows.

Run by the acting gateway process every RETENTION_INTERVAL_S (`app.services.periodic`). Rows go
in batches of RETENTION_BATCH_SIZE, one short transaction each, with a pause between them, so the
chat writer and the usage recorder are never held up for longer than one batch takes (on SQLite,
which has one writer at a time, that matters most). Each batch selects its ids through an index
and deletes them by primary key:

- usage rows (`requests`) whose `created_at` is older than the cutoff, oldest first;
- the oldest conversations whose last activity (`updated_at`) is older than the cutoff: their
  messages (regenerated variants first, so nothing goes by cascade and the counts are exact),
  then the conversations themselves (the delete checks `updated_at` again, so a conversation a
  user continues while the purge runs is kept; its oldest messages may already be gone, as they
  were due to be); and again, until none is left.

Migration 0009 adds the indexes this needs: `conversations.updated_at`, and those of the foreign
keys a delete has to check (`messages.variant_of`, `requests.conversation_id`: a purged
conversation's young usage rows keep their row, their link set to NULL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, Table, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.metrics import RETENTION_LAST_RUN, RETENTION_PURGED
from app.db.base import Base, utcnow
from app.db.models import Conversation, Message, RequestLog

log = structlog.get_logger()

_conversations = Base.metadata.tables[Conversation.__tablename__]
_messages = Base.metadata.tables[Message.__tablename__]
_requests = Base.metadata.tables[RequestLog.__tablename__]


class RetentionPurger:
    def __init__(
        self,
        engine: AsyncEngine,
        days: int,
        batch_size: int = 1000,
        pause_s: float = 0.02,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.days = days
        self.batch_size = batch_size
        self.pause_s = pause_s
        self.clock = clock
        self.batches = 0  # transactions run, over the purger's life (tests read it)

    def cutoff(self) -> datetime:
        return self.clock() - timedelta(days=self.days)

    async def _ids(self, conn: AsyncConnection, query: Select[tuple[Any]]) -> list[Any]:
        return list((await conn.execute(query)).scalars())

    async def _purge_requests(self, cutoff: datetime) -> int:
        n, total = self.batch_size, 0
        while True:
            async with self.engine.begin() as conn:
                ids = await self._ids(
                    conn,
                    select(_requests.c.id)
                    .where(_requests.c.created_at < cutoff)
                    .order_by(_requests.c.created_at)
                    .limit(n),
                )
                if ids:
                    deleted = await self._delete(conn, _requests, _requests.c.id.in_(ids))
                    total += deleted
            self.batches += 1
            if len(ids) < n:
                return total
            await asyncio.sleep(self.pause_s)  # let the writers in between two batches

    async def _purge_conversations(self, cutoff: datetime) -> tuple[int, int]:
        """The oldest `n` inactive conversations: their messages `n` at a time (regenerated
        variants before the answers they vary, so no row goes by cascade and the counts are
        exact), then the conversations themselves; and again, until none is left."""
        n, messages, conversations = self.batch_size, 0, 0
        while True:
            async with self.engine.begin() as conn:
                conv_ids = await self._ids(
                    conn,
                    select(_conversations.c.id)
                    .where(_conversations.c.updated_at < cutoff)
                    .order_by(_conversations.c.updated_at)
                    .limit(n),
                )
                if not conv_ids:
                    return messages, conversations
                of_these = _messages.c.conversation_id.in_(conv_ids)
                msg_ids = await self._ids(
                    conn,
                    select(_messages.c.id)
                    .where(of_these, _messages.c.variant_of.is_not(None))
                    .limit(n),
                ) or await self._ids(conn, select(_messages.c.id).where(of_these).limit(n))
                if msg_ids:
                    messages += await self._delete(conn, _messages, _messages.c.id.in_(msg_ids))
                else:
                    conversations += await self._delete(
                        conn,
                        _conversations,
                        and_(
                            _conversations.c.id.in_(conv_ids),
                            # checked again on the row: a conversation continued meanwhile stays
                            _conversations.c.updated_at < cutoff,
                        ),
                    )
            self.batches += 1
            await asyncio.sleep(self.pause_s)

    async def _delete(self, conn: AsyncConnection, table: Table, where: Any) -> int:
        deleted = (await conn.execute(delete(table).where(where))).rowcount or 0
        if deleted:
            RETENTION_PURGED.labels(table.name).inc(deleted)
        return deleted

    async def purge(self) -> dict[str, int]:
        """One pass: every row older than the cutoff, batch by batch. Returns the counts."""
        counts = {"requests": 0, "messages": 0, "conversations": 0}
        if self.days <= 0:
            return counts
        started = time.monotonic()
        cutoff = self.cutoff()
        # ids are selected first and deleted by primary key: `DELETE ... WHERE id IN (SELECT
        # ... LIMIT n)` made Postgres hash-join the subquery against a scan of the whole table
        counts["requests"] = await self._purge_requests(cutoff)
        counts["messages"], counts["conversations"] = await self._purge_conversations(cutoff)
        RETENTION_LAST_RUN.set(time.time())
        log.info(
            "retention purge",
            retention_days=self.days,
            cutoff=cutoff.isoformat(),
            duration_ms=round((time.monotonic() - started) * 1000),
            **{f"{table}_deleted": n for table, n in counts.items()},
        )
        return counts
