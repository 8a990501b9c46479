from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId, UTCDateTime, utcnow


class RequestLog(Base):
    """One usage row per chat request (SPEC §3 Usage), written in batches off the request path."""

    __tablename__ = "requests"
    __table_args__ = (
        Index("ix_requests_user_id_created_at", "user_id", "created_at"),
        Index("ix_requests_created_at", "created_at"),
        # deleting a conversation sets its usage rows' link to NULL without a scan
        Index("ix_requests_conversation_id", "conversation_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # usage outlives the account: deleting a user keeps its rows for accounting
    user_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="SET NULL")
    )
    conversation_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("conversations.id", ondelete="SET NULL")
    )
    model: Mapped[str | None] = mapped_column(String(200))
    profile: Mapped[str | None] = mapped_column(String(100))
    client: Mapped[str] = mapped_column(String(8), default="api")  # ui | api
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # whose count the tokens are: "upstream" (the model server's usage chunk) or "gateway" (a
    # stream cut before that chunk: the content events the gateway relayed); NULL: no tokens
    tokens_source: Mapped[str | None] = mapped_column(String(8))
    ttft_ms: Mapped[int | None] = mapped_column(Integer)  # first token of any kind
    answer_ttft_ms: Mapped[int | None] = mapped_column(Integer)  # first token of the answer
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
