from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigInt, BigIntId, UTCDateTime, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'user')", name="role_valid"),
        # never reuse an id on SQLite: a token for a deleted user must not fit a new one
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), default=Role.USER.value)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # per-user overrides of the rate limits; NULL means "the default from settings"
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_streams: Mapped[int | None] = mapped_column(Integer)
    # up to RATE_LIMIT_TOKENS_PER_DAY's ceiling (2**53 - 1): past a 32-bit INTEGER
    tokens_per_day: Mapped[int | None] = mapped_column(BigInt)
    # carried in every bearer token; bumping it (password, role or status change) revokes them all
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value
