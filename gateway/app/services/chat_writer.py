"""Conversation and message writes of the chat path, batched off the request path.

Writing each exchange in its own transactions cost more CPU than everything else `/api/chat`
does (profiled: ~2/3 of the gateway's time at c=32 on Postgres). Here every write is queued in
memory and one background task writes what has gathered every `INTERVAL_S`, in one transaction:
new conversations, then messages (executemany), then conversation touches and titles. Order
is kept: a conversation is always inserted before its messages.

Rules: a database outage keeps the batch and retries with backoff; a row that can never be
written (its conversation deleted meanwhile) is dropped with a log line, never the whole batch;
`stop()` writes everything left. Queued conversations are visible through `pending_owner()`, so
a follow-up message right after the first one finds its conversation before it is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import is_database_outage
from app.db.models import Conversation, Message

log = structlog.get_logger()

INTERVAL_S = 0.02
MAX_PENDING = 50_000  # rows; beyond this, writers wait for a flush (back-pressure, no loss)
BACKOFF_MAX_S = 5.0

_touch = (
    update(Conversation)
    .where(Conversation.id == bindparam("cid"))
    .values(updated_at=bindparam("ts"), model=bindparam("mdl"))
)
# a title is written where there is none, or where it is still the one it `replaces` (the
# question's first words): a title the user gave is never overwritten
_title = (
    update(Conversation)
    .where(
        Conversation.id == bindparam("cid"),
        or_(Conversation.title.is_(None), Conversation.title == bindparam("old")),
    )
    .values(title=bindparam("ttl"))
)


@dataclass
class _Batch:
    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    touches: dict[str, tuple[datetime, str | None]] = field(default_factory=dict)
    titles: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # title, replaces

    def __len__(self) -> int:
        return len(self.conversations) + len(self.messages) + len(self.touches) + len(self.titles)

    def prepend(self, older: _Batch) -> None:
        self.conversations[:0] = older.conversations
        self.messages[:0] = older.messages
        self.touches = older.touches | self.touches
        self.titles = older.titles | self.titles


NEW_VARIANT = "new_variant"  # a message row's flag: a regenerated answer


async def _insert_variant(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A regenerated answer joins the answers given since the conversation's last question, as
    their variant, and becomes the active one."""
    cid = row["conversation_id"]
    last_question = (
        select(func.coalesce(func.max(Message.id), 0))
        .where(Message.conversation_id == cid, Message.role == "user")
        .scalar_subquery()
    )
    root = await conn.scalar(
        select(func.min(Message.id)).where(
            Message.conversation_id == cid, Message.role == "assistant", Message.id > last_question
        )
    )
    if root is not None:
        await conn.execute(
            update(Message)
            .where(Message.conversation_id == cid, Message.role == "assistant", Message.id >= root)
            .values(active=False)
        )
    values = {k: v for k, v in row.items() if k != NEW_VARIANT}
    await conn.execute(insert(Message).values({**values, "variant_of": root, "active": True}))


class ChatWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._batch = _Batch()
        self._owners: dict[str, int] = {}  # queued, not yet written conversations
        self._wake = asyncio.Event()
        self._flushed = asyncio.Condition()
        self._writing = asyncio.Lock()  # one batch at a time, so batches commit in order
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written_total = 0
        self.dropped_total = 0

    # --- queueing (called by ChatStore) -------------------------------------------------------
    async def add_conversation(self, row: dict[str, Any]) -> None:
        await self._room()
        self._batch.conversations.append(row)
        self._owners[row["id"]] = row["user_id"]
        self._wake.set()

    async def add_message(self, row: dict[str, Any]) -> None:
        await self._room()
        self._batch.messages.append(row)
        self._wake.set()

    def touch(self, conversation_id: str, when: datetime, model: str | None) -> None:
        self._batch.touches[conversation_id] = (when, model)

    def set_title(self, conversation_id: str, title: str, *, replaces: str | None = None) -> None:
        """Title a conversation that has none (or still has `replaces`); the latest one wins."""
        self._batch.titles[conversation_id] = (title, replaces)
        self._wake.set()

    def pending_owner(self, conversation_id: str) -> int | None:
        return self._owners.get(conversation_id)

    @property
    def queue_depth(self) -> int:
        return len(self._batch)

    async def _room(self) -> None:
        while len(self._batch) >= MAX_PENDING:
            async with self._flushed:
                await self._flushed.wait()

    # --- the writer task ----------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chat-writer")

    async def stop(self) -> None:
        """Write everything queued, then end the task."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elif len(self._batch):
            await self._write_pending()

    async def flush(self) -> None:
        """Write what is queued now, and wait for a batch already being written.

        Conversation reads call this first (read-your-writes), and so does the usage recorder
        before each batch (its rows point at these conversations).
        """
        if len(self._batch) or self._writing.locked():
            await self._write_pending()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                await asyncio.sleep(INTERVAL_S)  # let a batch gather
            try:
                await self._write_pending()
                backoff = 0.1
            except Exception as exc:  # the batch is back in the queue: retry after a pause
                log.warning(
                    "chat writes failed, will retry",
                    error=type(exc).__name__,
                    queued=len(self._batch),
                )
                if self._stopping:
                    log.error("chat writes lost at shutdown", rows=len(self._batch))
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self._wake.set()
                continue
            if self._stopping and not len(self._batch):
                return

    async def _write_pending(self) -> None:
        async with self._writing:
            await self._write_pending_locked()

    async def _write_pending_locked(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not len(batch):
            return
        try:
            async with self.engine.begin() as conn:
                await self._write(conn, batch)
        except Exception as exc:
            if is_database_outage(exc):
                self._batch.prepend(batch)
                raise
            if not isinstance(exc, IntegrityError | DBAPIError):
                self._batch.prepend(batch)
                raise
            await self._write_one_by_one(batch)  # a conversation was deleted meanwhile
        for row in batch.conversations:
            self._owners.pop(row["id"], None)
        self.written_total += len(batch)
        async with self._flushed:
            self._flushed.notify_all()

    @staticmethod
    async def _write(conn: AsyncConnection, batch: _Batch) -> None:
        if batch.conversations:
            await conn.execute(insert(Conversation), batch.conversations)
        plain: list[dict[str, Any]] = []
        for row in batch.messages:  # in order: a variant follows the answers it joins
            if row.get(NEW_VARIANT):
                if plain:
                    await conn.execute(insert(Message), plain)
                    plain = []
                await _insert_variant(conn, row)
            else:
                plain.append(row)
        if plain:
            await conn.execute(insert(Message), plain)
        if batch.touches:
            await conn.execute(
                _touch, [{"cid": c, "ts": ts, "mdl": m} for c, (ts, m) in batch.touches.items()]
            )
        if batch.titles:
            await conn.execute(
                _title, [{"cid": c, "ttl": t, "old": o} for c, (t, o) in batch.titles.items()]
            )

    async def _write_one_by_one(self, batch: _Batch) -> None:
        singles = [_Batch(conversations=[row]) for row in batch.conversations]
        singles += [_Batch(messages=[row]) for row in batch.messages]
        singles += [_Batch(touches={c: v}) for c, v in batch.touches.items()]
        singles += [_Batch(titles={c: t}) for c, t in batch.titles.items()]
        for i, single in enumerate(singles):
            try:
                async with self.engine.begin() as conn:
                    await self._write(conn, single)
            except (IntegrityError, DBAPIError) as exc:
                if is_database_outage(exc):
                    rest = _Batch()
                    for later in singles[i:]:
                        _extend(rest, later)
                    self._batch.prepend(rest)
                    raise
                self.dropped_total += 1
                log.warning(
                    "chat write dropped: its conversation is gone", error=type(exc).__name__
                )


def _extend(batch: _Batch, more: _Batch) -> None:
    batch.conversations += more.conversations
    batch.messages += more.messages
    batch.touches |= more.touches
    batch.titles |= more.titles
