"""Run Alembic migrations from inside the app (start-up) or the CLI, on SQLite or Postgres."""

from __future__ import annotations

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


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    postgres = engine.dialect.name == "postgresql"
    async with engine.connect() as conn:
        if postgres:
            await conn.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})"))
        try:
            await conn.run_sync(_upgrade, revision)
            await conn.commit()
        finally:
            if postgres:
                await conn.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_ID})"))
                await conn.commit()
