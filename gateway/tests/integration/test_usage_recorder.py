"""UsageRecorder against the real engines: batching, back-pressure, outages and shutdown."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.db.engine import create_engine, create_session_factory
from app.db.models import Conversation, RequestLog, User
from app.main import create_app
from app.services.usage_recorder import UsageRecord, UsageRecorder
from tests.conftest import (
    empty_tables,
    make_settings,
    wait_until,
)
from tests.ports import free_port
from tests.tcp_proxy import TcpProxy

MakeRecorder = Callable[..., UsageRecorder]


@pytest.fixture
async def make_recorder(
    app: FastAPI, database_url: str, tmp_path: Path
) -> AsyncIterator[MakeRecorder]:
    """Recorders on the app's (migrated, emptied) database, with their own settings."""
    made: list[UsageRecorder] = []

    def make(**overrides: Any) -> UsageRecorder:
        recorder = UsageRecorder(
            app.state.session_factory, make_settings(database_url, tmp_path, **overrides)
        )
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        await recorder.stop()


@pytest.fixture
def inserts(app: FastAPI) -> Iterator[list[int]]:
    """The number of rows in each INSERT INTO requests the app's engine sends."""
    sizes: list[int] = []

    def count(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REQUESTS"):
            sizes.append(len(params) if many else 1)

    engine: AsyncEngine = app.state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    yield sizes
    event.remove(engine.sync_engine, "before_cursor_execute", count)


async def stored(factory: async_sessionmaker[AsyncSession]) -> list[RequestLog]:
    async with factory() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def user_id(app: FastAPI, username: str = "test") -> int:
    async with app.state.session_factory() as session:
        uid: int = (
            await session.execute(select(User.id).where(User.username == username))
        ).scalar_one()
    return uid


@pytest.fixture
async def dead_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a Postgres that refuses connections: an outage, as the recorder sees it."""
    url = f"postgresql+asyncpg://app:pass@127.0.0.1:{free_port()}/gone"
    engine = create_engine(settings.model_copy(update={"db_timeout_s": 1.0}), url)
    yield create_session_factory(engine)
    await engine.dispose()


async def test_a_row_is_written_with_every_field(app: FastAPI) -> None:
    recorder: UsageRecorder = app.state.usage_recorder
    uid = await user_id(app)
    async with app.state.session_factory.begin() as session:
        conversation = Conversation(user_id=uid, title="t")
        session.add(conversation)
    created = datetime(2024, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    recorder.record(
        UsageRecord(
            status_code=499,
            user_id=uid,
            request_id="req-1",
            conversation_id=conversation.id,
            model="m" * 250,  # longer than the column: cut, not a failed batch
            profile="phi3-mini",
            client="ui",
            prompt_tokens=11,
            completion_tokens=22,
            ttft_ms=33,
            latency_ms=44,
            error_code="client_closed",
            created_at=created,
        )
    )
    await recorder.flush()
    [row] = await stored(app.state.session_factory)
    assert (row.status_code, row.user_id, row.request_id) == (499, uid, "req-1")
    assert (row.conversation_id, row.model, row.profile) == (
        conversation.id,
        "m" * 200,
        "phi3-mini",
    )
    assert (row.client, row.prompt_tokens, row.completion_tokens) == ("ui", 11, 22)
    assert (row.ttft_ms, row.latency_ms, row.error_code) == (33, 44, "client_closed")
    assert row.created_at == created
    assert recorder.written_total == 1 and recorder.queue_depth == 0


async def test_defaults_are_written(make_recorder: MakeRecorder, app: FastAPI) -> None:
    recorder = make_recorder()
    recorder.record(UsageRecord(status_code=200))
    await recorder.flush()
    [row] = await stored(app.state.session_factory)
    assert row.client == "api" and row.user_id is None and row.prompt_tokens is None
    assert (datetime.now(UTC) - row.created_at).total_seconds() < 60


async def test_flush_writes_batches_of_the_configured_size(
    make_recorder: MakeRecorder, app: FastAPI, inserts: list[int]
) -> None:
    recorder = make_recorder(usage_batch_size=7)
    for i in range(50):
        recorder.record(UsageRecord(status_code=200, request_id=f"r{i}"))
    assert inserts == []  # record() never touches the database
    await recorder.flush()
    assert len(inserts) == math.ceil(50 / 7) and sum(inserts) == 50
    rows = await stored(app.state.session_factory)
    assert [r.request_id for r in rows] == [f"r{i}" for i in range(50)]


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    make_recorder: MakeRecorder, app: FastAPI, inserts: list[int]
) -> None:
    recorder = make_recorder(usage_batch_size=10, usage_flush_interval_ms=3_600_000)
    await recorder.start()
    for _ in range(25):
        recorder.record(UsageRecord(status_code=200))
    await wait_until(lambda: recorder.written_total == 20)
    assert inserts == [10, 10]
    assert recorder.queue_depth == 5  # not a full batch, and the interval is an hour
    await recorder.flush()
    assert recorder.written_total == 25 and inserts == [10, 10, 5]


async def test_a_partial_batch_is_written_after_the_interval(
    make_recorder: MakeRecorder, inserts: list[int]
) -> None:
    recorder = make_recorder(usage_batch_size=1000, usage_flush_interval_ms=50)
    await recorder.start()
    for _ in range(3):
        recorder.record(UsageRecord(status_code=200))
    await wait_until(lambda: recorder.written_total == 3)
    assert inserts == [3]
    recorder.record(UsageRecord(status_code=200))  # the loop keeps going after a write
    await wait_until(lambda: recorder.written_total == 4)


async def test_a_full_queue_drops_and_counts(make_recorder: MakeRecorder, app: FastAPI) -> None:
    recorder = make_recorder(usage_queue_max=100)
    for _ in range(130):
        recorder.record(UsageRecord(status_code=200))
    assert recorder.queue_depth == 100 and recorder.dropped_total == 30
    await recorder.flush()
    assert recorder.written_total == 100
    assert len(await stored(app.state.session_factory)) == 100
    recorder.record(UsageRecord(status_code=200))  # room again
    assert recorder.queue_depth == 1 and recorder.dropped_total == 30


async def test_rows_survive_an_outage_and_are_written_once_on_recovery(
    make_recorder: MakeRecorder,
    app: FastAPI,
    dead_sessions: async_sessionmaker[AsyncSession],
) -> None:
    recorder = make_recorder(usage_batch_size=10, usage_flush_interval_ms=20)
    healthy = recorder.session_factory
    recorder.session_factory = dead_sessions
    await recorder.start()
    for i in range(30):
        recorder.record(UsageRecord(status_code=200, request_id=f"r{i}"))
    await wait_until(lambda: recorder.failed_batches_total >= 2)
    assert recorder.written_total == 0 and recorder.queue_depth == 30
    with pytest.raises(TimeoutError):
        await recorder.flush(timeout=0.3)
    assert recorder.queue_depth == 30

    recorder.session_factory = healthy
    await wait_until(lambda: recorder.written_total == 30, timeout=15)
    rows = await stored(app.state.session_factory)
    assert sorted(r.request_id or "" for r in rows) == sorted(f"r{i}" for i in range(30))
    assert recorder.dropped_total == 0


async def test_stop_with_the_database_down_gives_up_at_its_deadline(
    make_recorder: MakeRecorder, dead_sessions: async_sessionmaker[AsyncSession]
) -> None:
    recorder = make_recorder()
    recorder.session_factory = dead_sessions
    recorder.stop_timeout_s = 0.5
    await recorder.start()
    for _ in range(5):
        recorder.record(UsageRecord(status_code=200))
    await recorder.stop()
    assert recorder.dropped_total == 5 and recorder.queue_depth == 0


async def test_rows_pointing_at_deleted_conversations_or_users_are_still_written(
    make_recorder: MakeRecorder, app: FastAPI
) -> None:
    uid = await user_id(app)
    async with app.state.session_factory.begin() as session:
        kept, doomed = Conversation(user_id=uid), Conversation(user_id=uid)
        session.add_all([kept, doomed])
    recorder = make_recorder()
    recorder.record(UsageRecord(status_code=200, request_id="kept", conversation_id=kept.id))
    recorder.record(UsageRecord(status_code=200, request_id="doomed", conversation_id=doomed.id))
    recorder.record(UsageRecord(status_code=200, request_id="never", conversation_id="x" * 36))
    recorder.record(UsageRecord(status_code=200, request_id="gone-user", user_id=10**9))
    recorder.record(UsageRecord(status_code=200, request_id="mine", user_id=uid))
    async with app.state.session_factory.begin() as session:
        await session.delete(await session.get(Conversation, doomed.id))
    await recorder.flush()
    rows = {r.request_id: r for r in await stored(app.state.session_factory)}
    assert set(rows) == {"kept", "doomed", "never", "gone-user", "mine"}
    assert rows["kept"].conversation_id == kept.id
    assert rows["doomed"].conversation_id is None and rows["never"].conversation_id is None
    assert rows["gone-user"].user_id is None and rows["mine"].user_id == uid
    assert recorder.written_total == 5 and recorder.dropped_total == 0


async def test_an_unwritable_row_does_not_hold_back_the_others(
    make_recorder: MakeRecorder, app: FastAPI
) -> None:
    recorder = make_recorder()
    recorder.record(UsageRecord(status_code=200, request_id="a"))
    bad = UsageRecord(status_code=200, request_id="bad")
    bad.status_code = None  # type: ignore[assignment]  # NOT NULL: can never be written
    recorder.record(bad)
    recorder.record(UsageRecord(status_code=200, request_id="b"))
    await recorder.flush()
    assert [r.request_id for r in await stored(app.state.session_factory)] == ["a", "b"]
    assert recorder.written_total == 2 and recorder.dropped_total == 1
    assert recorder.queue_depth == 0


async def test_record_never_raises(make_recorder: MakeRecorder) -> None:
    recorder = make_recorder()
    recorder.record(None)  # type: ignore[arg-type]
    assert recorder.dropped_total == 1 and recorder.queue_depth == 0


async def test_stop_without_start_writes_what_was_queued(
    make_recorder: MakeRecorder, app: FastAPI
) -> None:
    recorder = make_recorder()
    for _ in range(5):
        recorder.record(UsageRecord(status_code=200))
    await recorder.stop()
    assert len(await stored(app.state.session_factory)) == 5
    recorder.record(UsageRecord(status_code=200))  # after stop: counted, not queued
    assert recorder.dropped_total == 1 and recorder.queue_depth == 0
    await recorder.stop()  # twice is fine


async def count_rows(database_url: str, settings: Settings) -> int:
    engine = create_engine(settings, database_url)
    try:
        async with engine.connect() as conn:
            n: int = (await conn.execute(select(func.count(RequestLog.id)))).scalar_one()
        return n
    finally:
        await engine.dispose()


async def test_graceful_shutdown_writes_every_recorded_row(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, usage_batch_size=300, usage_flush_interval_ms=3_600_000
    )
    await empty_tables(database_url, settings)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30):
        recorder: UsageRecorder = app.state.usage_recorder
        for i in range(1000):
            recorder.record(UsageRecord(status_code=200, request_id=f"s{i}", model="m"))
    assert recorder.written_total == 1000 and recorder.dropped_total == 0
    assert await count_rows(database_url, settings) == 1000


async def test_postgres_cut_under_a_running_gateway_loses_no_row(
    proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path
) -> None:
    direct_url, proxied_url, proxy = proxied_postgres
    settings = make_settings(proxied_url, tmp_path, usage_flush_interval_ms=20, db_timeout_s=1.0)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30):
        recorder: UsageRecorder = app.state.usage_recorder
        for _ in range(10):
            recorder.record(UsageRecord(status_code=200))
        await wait_until(lambda: recorder.written_total == 10)

        await proxy.stop()
        for _ in range(10):
            recorder.record(UsageRecord(status_code=200))
        await wait_until(lambda: recorder.failed_batches_total >= 1, timeout=15)
        assert recorder.queue_depth == 10

        await proxy.start()
        await wait_until(lambda: recorder.written_total == 20, timeout=15)
    assert await count_rows(direct_url, settings) == 20


async def test_bulk_insert_is_one_statement_per_batch_on_this_engine(
    app: FastAPI, inserts: list[int]
) -> None:
    """Guards the `inserts` probe itself: an executemany is one statement, not one per row."""
    rows = [{"status_code": 200, "client": "api", "created_at": datetime.now(UTC)}] * 5
    async with app.state.session_factory.begin() as session:
        await session.execute(insert(RequestLog), rows)
    assert inserts == [5]
