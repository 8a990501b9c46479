from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId, UTCDateTime, utcnow


def new_conversation_id() -> str:
    return str(uuid.uuid4())


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # the sidebar query: a user's conversations, most recently active first
        Index("ix_conversations_user_id_updated_at", "user_id", "updated_at"),
        # the retention purge: conversations by last activity, whoever owns them
        Index("ix_conversations_updated_at", "updated_at"),
    )

    # opaque ids: nothing to enumerate, and they travel in headers and URLs
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_conversation_id)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(200))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
