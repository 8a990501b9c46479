"""RETENTION_DAYS: the purge of old conversations (with their messages) and usage rows.

Run by the acting gateway process every RETENTION_INTERVAL_S (`app.services.periodic`). Rows go
in batches of RETENTION_BATCH_SIZE, one short transaction each, with a pause between them, so the
chat writer and the usage recorder are never held up for longer than one batch takes (on SQLite,
which has one writer at a time, that matters most):

- usage rows (`requests`) whose `created_at` is older than the cutoff;
- messages of conversations whose last activity (`updated_at`) is older than the cutoff;
- then those conversations themselves (the delete checks `updated_at` again, so a conversation
  a user continues while the purge runs is kept; its oldest messages may already be gone, as they
  were due to be).

Every query walks an index (migration 0009): `conversations.updated_at`, `requests.created_at`,
and the foreign keys a delete has to check (`messages.variant_of`, `requests.conversation_id`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Delete, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

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

    def _statements(self, cutoff: datetime) -> list[tuple[str, Delete]]:
        n = self.batch_size
        old_requests = (
            select(_requests.c.id)
            .where(_requests.c.created_at < cutoff)
            .order_by(_requests.c.created_at)
            .limit(n)
        )
        old_messages = (
            select(_messages.c.id)
            .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
            .where(_conversations.c.updated_at < cutoff)
            .order_by(_messages.c.id)
            .limit(n)
        )
        old_conversations = (
            select(_conversations.c.id)
            .where(_conversations.c.updated_at < cutoff)
            .order_by(_conversations.c.updated_at)
            .limit(n)
        )
        return [
            ("requests", delete(_requests).where(_requests.c.id.in_(old_requests))),
            ("messages", delete(_messages).where(_messages.c.id.in_(old_messages))),
            (
                "conversations",
                delete(_conversations).where(
                    _conversations.c.id.in_(old_conversations),
                    _conversations.c.updated_at < cutoff,  # checked again on the row itself
                ),
            ),
        ]

    async def purge(self) -> dict[str, int]:
        """One pass: every row older than the cutoff, batch by batch. Returns the counts."""
        counts = {"requests": 0, "messages": 0, "conversations": 0}
        if self.days <= 0:
            return counts
        started = time.monotonic()
        cutoff = self.cutoff()
        for table, statement in self._statements(cutoff):
            while True:
                async with self.engine.begin() as conn:
                    deleted = (await conn.execute(statement)).rowcount or 0
                self.batches += 1
                if deleted:
                    counts[table] += deleted
                    RETENTION_PURGED.labels(table).inc(deleted)
                if deleted < self.batch_size:
                    break
                await asyncio.sleep(self.pause_s)  # let the writers in between two batches
        RETENTION_LAST_RUN.set(time.time())
        log.info(
            "retention purge",
            retention_days=self.days,
            cutoff=cutoff.isoformat(),
            duration_ms=round((time.monotonic() - started) * 1000),
            **{f"{table}_deleted": n for table, n in counts.items()},
        )
        return counts
