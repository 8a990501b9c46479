"""Engine and session factory for SQLite (local mode) and Postgres (compose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.config import Settings


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    url = url or settings.effective_database_url
    if is_sqlite(url):
        return _sqlite_engine(url, settings)
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_timeout_s,
        # No pre-ping: it costs a round trip per checkout on the chat path. A dropped connection
        # fails one statement (503 database_unavailable), and SQLAlchemy then invalidates the
        # whole pool, so the next requests reconnect (tests/integration/test_database_outage.py).
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_timeout_s,
            "command_timeout": 30,
            "server_settings": {"application_name": "vllm-chat-gateway"},
        },
    )


def _sqlite_engine(url: str, settings: Settings) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": settings.db_timeout_s})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the usage writer
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.db_timeout_s * 1000)}")
        cursor.close()

    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
