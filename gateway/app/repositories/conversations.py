"""Queries on conversations, their messages and user settings.

Ownership is a SQL filter: a conversation that is not the caller's is simply not found.
No commits here: the request's session owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Conversation, Message, UserSettings

PREVIEW_CHARS = 120


def canonical_conversation_id(value: str) -> str | None:
    """The stored spelling of a conversation id, or None when `value` is no UUID at all."""
    if len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation as the list shows it: with its message count and last message's start."""

    conversation: Conversation
    message_count: int
    preview: str | None


@dataclass(frozen=True, slots=True)
class PagePosition:
    """Where a keyset page starts: strictly after this (updated_at, id), newest first."""

    updated_at: datetime
    id: str


class ConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_owned(self, conversation_id: str, user_id: int) -> Conversation | None:
        """The conversation with this id if `user_id` owns it, else None.

        None also for an id that is not a UUID, so callers answer "not found" alike for a
        malformed id, an unknown one and another user's.
        """
        canonical = canonical_conversation_id(conversation_id)
        if canonical is None:
            return None
        stmt = select(Conversation).where(
            Conversation.id == canonical, Conversation.user_id == user_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(
        self, user_id: int, *, limit: int, after: PagePosition | None, query: str | None
    ) -> list[ConversationRow]:
        """Up to `limit` of the user's conversations, newest `updated_at` first (ties by id).

        One query: the count and the preview are correlated subqueries, not one query per row.
        `query` matches the title or any message's content, case-insensitively, as a literal
        substring (`%` and `_` are escaped).
        """
        message_count = (
            select(func.count(Message.id))
            .where(Message.conversation_id == Conversation.id)
            .correlate(Conversation)
            .scalar_subquery()
        )
        preview = (
            select(func.substr(Message.content, 1, PREVIEW_CHARS))
            .where(Message.conversation_id == Conversation.id)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(1)
            .correlate(Conversation)
            .scalar_subquery()
        )
        stmt = (
            select(Conversation, message_count, preview)
            .where(Conversation.user_id == user_id)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(
                or_(
                    Conversation.updated_at < after.updated_at,
                    and_(Conversation.updated_at == after.updated_at, Conversation.id < after.id),
                )
            )
        if query:
            in_messages = exists().where(
                Message.conversation_id == Conversation.id,
                Message.content.icontains(query, autoescape=True),
            )
            stmt = stmt.where(
                or_(Conversation.title.icontains(query, autoescape=True), in_messages)
            )
        rows = (await self.session.execute(stmt)).all()
        return [ConversationRow(row[0], int(row[1]), row[2]) for row in rows]

    async def messages(self, conversation_id: str) -> list[Message]:
        stmt = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
            .execution_options(populate_existing=True)  # `active` may have changed by UPDATE
        )
        return list((await self.session.execute(stmt)).scalars())

    async def activate_variant(self, conversation_id: str, message_id: int) -> bool:
        """Make `message_id` the active answer of its turn; False when no such answer here."""
        message = (
            await self.session.execute(
                select(Message).where(
                    Message.id == message_id,
                    Message.conversation_id == conversation_id,
                    Message.role == "assistant",
                )
            )
        ).scalar_one_or_none()
        if message is None:
            return False
        root = message.variant_of or message.id
        await self.session.execute(
            update(Message)
            .where(
                Message.conversation_id == conversation_id,
                or_(Message.id == root, Message.variant_of == root),
            )
            .values(active=Message.id == message_id)
            .execution_options(synchronize_session=False)
        )
        await self.session.flush()
        return True

    def add(self, conversation: Conversation) -> None:
        self.session.add(conversation)

    async def delete_owned(self, conversation_id: str, user_id: int) -> bool:
        """Delete in one statement; the database's ON DELETE CASCADE removes the messages.

        Never loads the messages into the session. False when there was nothing of the user's.
        """
        canonical = canonical_conversation_id(conversation_id)
        if canonical is None:
            return False
        stmt = (
            delete(Conversation)
            .where(Conversation.id == canonical, Conversation.user_id == user_id)
            .returning(Conversation.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).first() is not None


class UserSettingsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> UserSettings | None:
        return await self.session.get(UserSettings, user_id)

    async def upsert(self, user_id: int, values: dict[str, Any]) -> UserSettings:
        """Insert or update in one statement, so two first saves racing cannot collide."""
        dialect = self.session.get_bind().dialect.name
        insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert_fn(UserSettings).values(user_id=user_id, updated_at=utcnow(), **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[UserSettings.user_id], set_={**values, "updated_at": utcnow()}
        )
        await self.session.execute(stmt)
        row = await self.session.get(UserSettings, user_id, populate_existing=True)
        assert row is not None
        return row
