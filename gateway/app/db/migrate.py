"""Run Alembic migrations from inside the app (start-up) or the CLI, on SQLite or Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import GATEWAY_DIR

# Several workers may start at once: on Postgres they queue on this advisory lock.
_MIGRATION_LOCK_ID = 7_243_001


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config(str(GATEWAY_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(GATEWAY_DIR / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Several workers on one SQLite file take turns (SQLite DDL is not transactional here, so
    two at once could both apply a revision)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    handle = await asyncio.to_thread(open, f"{database}.migrate-lock", "a")
    try:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    postgres = engine.dialect.name == "postgresql"
    async with _sqlite_file_lock(engine), engine.connect() as conn:
        if postgres:
            await conn.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})"))
        try:
            await conn.run_sync(_upgrade, revision)
            await conn.commit()
        finally:
            if postgres:
                await conn.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_ID})"))
                await conn.commit()
