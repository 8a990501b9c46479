from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId, UTCDateTime, utcnow


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('system', 'user', 'assistant')", name="role_valid"),
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        # deleting a message finds its variants (ON DELETE CASCADE) without a scan
        Index("ix_messages_variant_of", "variant_of"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    # a reasoning model's chain of thought, apart from the answer, and how long it thought
    reasoning: Mapped[str | None] = mapped_column(Text)
    reasoning_ms: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # complete | partial (client stopped) | error (upstream failed mid-answer)
    status: Mapped[str] = mapped_column(String(16), default="complete")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # regenerated answers are variants of one turn: each names the turn's first answer, and
    # one variant per turn is the `active` one (shown, and sent as context for the next turn)
    variant_of: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("messages.id", ondelete="CASCADE")
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
