"""Alembic: empty → head on both engines gives exactly the models' schema; down and up again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from app.db.base import Base
from app.db.engine import create_engine
from app.db.migrate import alembic_config, migrate
from tests.conftest import create_pg_database, drop_pg_database, make_settings

EXPECTED_INDEXES = {
    "conversations": {"ix_conversations_user_id_updated_at"},
    "messages": {"ix_messages_conversation_id_created_at"},
    "requests": {"ix_requests_user_id_created_at", "ix_requests_created_at"},
    "api_keys": {"ix_api_keys_user_id"},
}


@pytest.fixture
async def empty_database(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new database of the same engine as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    url = await create_pg_database("gw_migr")
    try:
        yield url
    finally:
        await drop_pg_database(url)


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _schema(conn: Connection) -> dict[str, object]:
    insp = inspect(conn)
    return {
        t: (
            sorted(c["name"] for c in insp.get_columns(t)),
            sorted(i["name"] or "" for i in insp.get_indexes(t)),
        )
        for t in insp.get_table_names()
    }


async def test_empty_to_head_matches_models(empty_database: str, tmp_path: Path) -> None:
    engine = create_engine(make_settings(empty_database, tmp_path), empty_database)
    try:
        await migrate(engine)
        await migrate(engine)  # a second run is a no-op, not an error
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            schema = await conn.run_sync(_schema)
        assert set(schema) >= {
            "users",
            "user_settings",
            "api_keys",
            "conversations",
            "messages",
            "requests",
            "alembic_version",
        }
        for table, indexes in EXPECTED_INDEXES.items():
            assert indexes <= set(schema[table][1]), (table, schema[table])
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_up_again(empty_database: str, tmp_path: Path) -> None:
    engine = create_engine(make_settings(empty_database, tmp_path), empty_database)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            before = await conn.run_sync(_schema)
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
            await conn.commit()
            emptied = await conn.run_sync(_schema)
        assert set(emptied) <= {"alembic_version", "sqlite_sequence"}
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema) == before
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_keys_made_before_scopes_become_chat_keys(
    empty_database: str, tmp_path: Path
) -> None:
    """Migration 0003 (issue 12 #8): keys that existed before scopes are narrowed to `chat`
    (such a key may have been minted by a stolen key); new rows check the scope's values."""
    engine = create_engine(make_settings(empty_database, tmp_path), empty_database)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0001"))
            await conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, disabled, token_version,"
                    " created_at, updated_at) VALUES ('old', 'x', 'user', false, 0,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at)"
                    " SELECT id, 'legacy', 'sk-old', 'h1', CURRENT_TIMESTAMP FROM users"
                )
            )
            await conn.commit()
        await migrate(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT scope FROM api_keys"))).scalar_one() == "chat"
            with pytest.raises(IntegrityError):
                await conn.execute(text("UPDATE api_keys SET scope = 'admin'"))
    finally:
        await engine.dispose()


async def test_0005_groups_earlier_regenerations_and_names_untitled_conversations(
    empty_database: str, tmp_path: Path
) -> None:
    """Before 0005 a regenerated answer was stored after the one it replaced: after the upgrade
    consecutive answers are variants of the first, the newest one shown."""
    engine = create_engine(make_settings(empty_database, tmp_path), empty_database)
    try:
        await migrate(engine, "0001")
        rows = [("user", "q1"), ("assistant", "a1"), ("assistant", "a1 again")]
        rows += [("assistant", "a1 third"), ("user", "q2"), ("assistant", "a2")]
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, disabled, token_version,"
                    " created_at, updated_at) VALUES ('u', 'x', 'user', false, 0,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            for cid, title in (("c1", None), ("c2", "Named"), ("c3", None)):
                await conn.execute(
                    text(
                        "INSERT INTO conversations (id, user_id, title, created_at, updated_at)"
                        " VALUES (:id, (SELECT id FROM users), :title, CURRENT_TIMESTAMP,"
                        " CURRENT_TIMESTAMP)"
                    ),
                    {"id": cid, "title": title},
                )
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, role, content, status, created_at)"
                    " VALUES ('c2', 'user', 'not the title', 'complete', CURRENT_TIMESTAMP)"
                )
            )
            for i, (role, content) in enumerate(rows):
                await conn.execute(
                    text(
                        "INSERT INTO messages (conversation_id, role, content, status, created_at)"
                        " VALUES ('c1', :role, :content, 'complete', :at)"
                    ),
                    {"role": role, "content": content, "at": datetime(2026, 1, 1, 0, 0, i)},
                )
        await migrate(engine)
        async with engine.connect() as conn:
            got = (
                await conn.execute(
                    text(
                        "SELECT id, content, variant_of, active FROM messages"
                        " WHERE conversation_id = 'c1' ORDER BY id"
                    )
                )
            ).all()
            titles = [
                tuple(r)
                for r in await conn.execute(text("SELECT id, title FROM conversations ORDER BY id"))
            ]
        ids = [r[0] for r in got]
        assert [(r[1], r[2], bool(r[3])) for r in got] == [
            ("q1", None, True),
            ("a1", None, False),
            ("a1 again", ids[1], False),
            ("a1 third", ids[1], True),
            ("q2", None, True),
            ("a2", None, True),
        ]
        # untitled conversations are named by their first question; a title is kept; a
        # conversation without a question stays untitled
        assert titles == [("c1", "q1"), ("c2", "Named"), ("c3", None)]
    finally:
        await engine.dispose()
