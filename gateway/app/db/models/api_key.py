from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId, UTCDateTime, utcnow


class KeyScope(StrEnum):
    """What an API key may do. `chat`: the chat routes, `/v1/*` and the model list; `full`:
    whatever its owner's role allows, except managing keys (that needs a password login)."""

    CHAT = "chat"
    FULL = "full"


class ApiKey(Base):
    """A long-lived credential for API clients; only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_user_id", "user_id"),
        CheckConstraint("scope IN ('chat', 'full')", name="scope_valid"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a key
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # keys made before scopes existed (migration 0003) were narrowed to chat
    scope: Mapped[str] = mapped_column(
        String(8), default=KeyScope.CHAT.value, server_default=KeyScope.CHAT.value
    )
