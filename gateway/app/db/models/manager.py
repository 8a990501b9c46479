from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigIntId


class ManagerLease(Base):
    """The model manager's lease and shared state when there is no Redis (issue 15): one row,
    id 1. `holder` acts until `expires_at` (seconds since the epoch, by the database's clock);
    `fence` grows with every new holder; `state` is the holder's snapshot, `seq` its version."""

    __tablename__ = "manager_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(200))
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str | None] = mapped_column(Text)


class ManagerCommand(Base):
    """A switch or a reload asked of a process that does not act, waiting for the holder's
    `reply` (an empty one: taken, not answered yet)."""

    __tablename__ = "manager_commands"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    op: Mapped[str] = mapped_column(String(20))  # switch | reload
    profile_id: Mapped[str] = mapped_column(String(100))
    deadline: Mapped[float] = mapped_column(Float)
    reply: Mapped[str | None] = mapped_column(Text)


class ManagerNode(Base):
    """A live gateway process and its chat answers in flight (the holder drains them all)."""

    __tablename__ = "manager_nodes"

    node_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    closed_for: Mapped[str | None] = mapped_column(String(64))  # the switch its gate waits on
    seen_at: Mapped[float] = mapped_column(Float, default=0.0)
