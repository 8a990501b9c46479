"""scripts/backup.sh and scripts/restore.sh on both engines, the real scripts as subprocesses.

A backup taken while a live gateway stores many streaming chats restores to a database whose row
counts are the backup manifest's, and the manifest's counts are those of the snapshot the dump was
taken in (Postgres: counted inside the transaction whose exported snapshot pg_dump dumps; SQLite:
counted in the copy the online backup API made in one step). Each restored row is one the live
database holds too (nothing invented, nothing half-written), and the restored database is on the
current schema and serves logins. Restore refuses a non-empty database without --yes, and a
corrupted or truncated file leaves the target as it was, even with --yes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import insert, text

from app.db.engine import create_engine
from app.db.models import User
from app.main import create_app
from tests.conftest import (
    create_pg_database,
    drop_pg_database,
    login,
    make_settings,
    read_sse,
    sim_post,
)

REPO_DIR = Path(__file__).resolve().parents[3]
TABLES = ("users", "conversations", "messages", "requests")


async def _script(
    name: str,
    database_url: str,
    *args: str,
    env_extra: dict[str, str] | None = None,
    repo: Path = REPO_DIR,
) -> tuple[int, str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "DATABASE_", "SQLITE_"))
    }
    env.update({"DEPLOY_MODE": "local", "DATABASE_URL": database_url})
    env.update(env_extra or {})
    proc = await asyncio.create_subprocess_exec(
        str(repo / "scripts" / name),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _counts(database_url: str, tmp_path: Path) -> dict[str, int]:
    engine = create_engine(make_settings(database_url, tmp_path), database_url)
    try:
        async with engine.connect() as conn:
            return {
                t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()  # noqa: S608
                for t in TABLES
            }
    finally:
        await engine.dispose()


async def _rows(database_url: str, tmp_path: Path) -> dict[str, set[tuple[Any, ...]]]:
    engine = create_engine(make_settings(database_url, tmp_path), database_url)
    queries = {
        "users": "SELECT id, username, password_hash FROM users",
        "conversations": "SELECT id, user_id, title FROM conversations",
        "messages": "SELECT id, conversation_id, role, content, status FROM messages",
        "requests": "SELECT id, request_id, status_code, completion_tokens FROM requests",
    }
    try:
        async with engine.connect() as conn:
            return {
                t: {tuple(r) for r in (await conn.execute(text(q))).all()}
                for t, q in queries.items()
            }
    finally:
        await engine.dispose()


@pytest.fixture
async def fresh_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the same engine, the restore's target."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / f'restored-{uuid.uuid4().hex[:8]}.db'}"
        return
    url = await create_pg_database("gw_restore")
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def _chat_load(base: str, token: str, stop: asyncio.Event, done: list[int]) -> None:
    """One user's loop: a new conversation streamed through /api/chat, then a /v1 request."""
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as c:
        n = 0
        while not stop.is_set():
            n += 1
            async with c.stream(
                "POST", "/api/chat", json={"messages": [{"role": "user", "content": f"q{n}"}]}
            ) as r:
                assert r.status_code == 200
                events = await read_sse(r)
                assert events[-1] == "[DONE]"
            r2 = await c.post(
                "/v1/chat/completions",
                json={"model": "current", "messages": [{"role": "user", "content": "x"}]},
            )
            assert r2.status_code == 200
            done[0] += 1


async def test_backup_under_chat_load_restores_the_snapshot(
    start_gateway: Any, simulator: Any, database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "backups"
    async with start_gateway(rate_limit_enabled=False, usage_flush_interval_ms=50) as gw:
        await sim_post(simulator, "/sim/config", {"ttft_ms": 20, "itl_ms": 15, "tokens": 12})
        async with gw.client() as c:
            token = await login(c, "test", "test")
        stop, done = asyncio.Event(), [0]
        workers = [asyncio.create_task(_chat_load(gw.url, token, stop, done)) for _ in range(16)]
        try:
            while done[0] < 20:  # the load is well under way: rows keep being committed
                await asyncio.sleep(0.05)
                assert not any(w.done() for w in workers), [w.exception() for w in workers]
            before = await _counts(database_url, tmp_path)
            rc, stdout, stderr = await _script("backup.sh", database_url, "--out", str(out))
            after = await _counts(database_url, tmp_path)
            assert not any(w.done() for w in workers), [w.exception() for w in workers]
        finally:
            stop.set()
            results = await asyncio.gather(*workers, return_exceptions=True)
        assert all(r is None for r in results), results
    # the gateway has stopped: every queued row is written
    assert rc == 0, stderr
    backup = Path(stdout.strip().splitlines()[-1])
    assert backup.parent == out and backup.is_file()
    assert backup.name.startswith("gateway-") and backup.suffix in (".pgdump", ".sqlite3")
    sums = backup.with_name(backup.name + ".sha256").read_text().split()
    assert sums[1] == backup.name
    manifest = json.loads(backup.with_name(backup.name + ".json").read_text())
    counts = manifest["row_counts"]
    assert manifest["alembic_revision"] is not None and manifest["sha256"] == sums[0]
    # rows were being committed all along: the snapshot lies between the two readings
    assert after["messages"] > before["messages"] and after["requests"] > before["requests"]
    print(f"\nbefore {before}\nbackup {counts}\nafter  {after}")
    for t in TABLES:
        assert before[t] <= counts[t] <= after[t], (t, before, counts, after)

    rc, _, stderr = await _script("restore.sh", fresh_url, str(backup))
    assert rc == 0, stderr
    assert "row counts match" in stderr
    restored = await _counts(fresh_url, tmp_path)
    assert restored == {t: counts[t] for t in TABLES}
    # every restored row is one the live database committed, byte for byte
    live, back = await _rows(database_url, tmp_path), await _rows(fresh_url, tmp_path)
    for t in TABLES:
        missing = back[t] - live[t]
        assert not missing, (t, list(missing)[:3])
    # assistant answers stored complete are whole (the simulator's 12 tokens)
    assert all(m[4] in ("complete", "partial", "error") for m in back["messages"])
    # on the current schema, and a gateway serves it: logins and the restored conversations
    settings = make_settings(fresh_url, tmp_path)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30):
        async with app.state.engine.connect() as conn:
            head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert head == [(manifest["alembic_revision"],)]
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
            tok = await login(c, "test", "test")
            r = await c.get(
                "/api/conversations",
                params={"limit": 100},
                headers={"Authorization": f"Bearer {tok}"},
            )
            assert r.status_code == 200
            assert len(r.json()["conversations"]) == min(100, counts["conversations"]) > 0


async def _some_data(url: str, tmp_path: Path) -> None:
    """A database with the gateway's schema and its two demo accounts."""
    app = create_app(make_settings(url, tmp_path))
    async with LifespanManager(app, startup_timeout=30):
        pass


async def test_restore_refuses_a_non_empty_database_and_bad_files(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    await _some_data(database_url, tmp_path)
    rc, stdout, stderr = await _script("backup.sh", database_url, "--out", str(tmp_path / "b"))
    assert rc == 0, stderr
    backup = Path(stdout.strip().splitlines()[-1])

    # the target holds data of its own: a user the backup does not have
    await _some_data(fresh_url, tmp_path)
    engine = create_engine(make_settings(fresh_url, tmp_path), fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(User).values(username="only-here", password_hash="x"))
    finally:
        await engine.dispose()
    untouched = await _rows(fresh_url, tmp_path)

    rc, _, stderr = await _script("restore.sh", fresh_url, str(backup))
    assert rc == 2 and "refusing to overwrite" in stderr and "--yes" in stderr, stderr
    assert await _rows(fresh_url, tmp_path) == untouched

    # corrupted: one byte changed in the middle; truncated: half the file
    corrupt = tmp_path / "c" / backup.name
    corrupt.parent.mkdir()
    for suffix in (".sha256", ".json"):
        twin = corrupt.with_name(corrupt.name + suffix)
        shutil.copy(backup.with_name(backup.name + suffix), twin)
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    rc, _, stderr = await _script("restore.sh", fresh_url, str(corrupt), "--yes")
    assert rc == 3 and "does not match its sha256" in stderr, stderr
    assert await _rows(fresh_url, tmp_path) == untouched

    corrupt.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    rc, _, stderr = await _script("restore.sh", fresh_url, str(corrupt), "--yes")
    assert rc == 3 and "corrupted or truncated" in stderr, stderr
    assert await _rows(fresh_url, tmp_path) == untouched

    # truncated with a checksum made for it (a copy cut short before it was summed): the file
    # itself is read whole before the target is touched
    import hashlib

    digest = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    corrupt.with_name(corrupt.name + ".sha256").write_text(f"{digest}  {corrupt.name}\n")
    rc, _, stderr = await _script("restore.sh", fresh_url, str(corrupt), "--yes")
    assert rc == 3, stderr
    assert "error:" in stderr and "Traceback" not in stderr, stderr
    assert await _rows(fresh_url, tmp_path) == untouched

    # no checksum beside it: refused as well
    corrupt.with_name(corrupt.name + ".sha256").unlink()
    rc, _, stderr = await _script("restore.sh", fresh_url, str(corrupt), "--yes")
    assert rc == 3 and "no checksum file" in stderr, stderr

    # with --yes the good backup replaces it: the extra user is gone
    rc, _, stderr = await _script("restore.sh", fresh_url, str(backup), "--yes")
    assert rc == 0, stderr
    users = {u[1] for u in (await _rows(fresh_url, tmp_path))["users"]}
    assert users == {"admin", "test"}


# `docker` for the compose path: `compose exec -T postgres CMD` runs CMD here with the postgres
# image's environment (POSTGRES_USER/POSTGRES_DB) pointed at the test's database; `compose run
# gateway python -m app.cli migrate` migrates it; every call is logged.
FAKE_DOCKER = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_DOCKER_LOG"
[[ "$1" == info ]] && exit 0
[[ "$1" == compose ]] || exit 1
shift
[[ "$1" == version ]] && exit 0
[[ "$1" == -f ]] && shift 2
case "$1" in
  exec)
    shift; [[ "$1" == -T ]] || exit 1; shift; [[ "$1" == postgres ]] || exit 1; shift
    export POSTGRES_USER=postgres POSTGRES_DB="$FAKE_PG_DB" PGHOST=127.0.0.1
    exec "$@" ;;
  ps) [[ -n "${FAKE_GATEWAY_RUNNING:-}" ]] && echo 0123abcd; exit 0 ;;
  stop | start) exit 0 ;;
  run)
    [[ "$*" == "run --rm --no-deps gateway python -m app.cli migrate" ]] || exit 1
    cd "$FAKE_GATEWAY_DIR" || exit 1
    DATABASE_URL="$FAKE_DB_URL" exec .venv/bin/python -m app.cli migrate ;;
esac
exit 1
"""


def _fake_docker(tmp_path: Path, url: str, **extra: str) -> tuple[dict[str, str], Path]:
    """A stand-in `docker` first on PATH (it logs its calls to the returned file and runs the
    database commands against `url`), and the environment the scripts need to use it."""
    from tests.conftest import GATEWAY_DIR

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(FAKE_DOCKER)
    (bindir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    env = {
        "DEPLOY_MODE": "compose",
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "FAKE_DOCKER_LOG": str(log),
        "FAKE_PG_DB": url.rsplit("/", 1)[1],
        "FAKE_DB_URL": url,
        "FAKE_GATEWAY_DIR": str(GATEWAY_DIR),
        **extra,
    }
    return env, log


async def test_compose_mode_goes_through_the_postgres_container(tmp_path: Path) -> None:
    """The compose path's commands, with a stand-in `docker` (no images can be pulled here):
    pg_dump/psql/pg_restore run as `compose exec -T postgres`, the gateway is stopped for the
    restore, the database migrated with `compose run gateway`, and the gateway started again."""
    from tests.conftest import require_postgres

    require_postgres()
    url = await create_pg_database("gw_compose_bk")
    try:
        await _some_data(url, tmp_path)
        env, log = _fake_docker(tmp_path, url, FAKE_GATEWAY_RUNNING="1")
        rc, stdout, stderr = await _script(
            "backup.sh", "", "--out", str(tmp_path / "b"), env_extra=env
        )
        assert rc == 0, stderr
        backup = Path(stdout.strip().splitlines()[-1])
        assert backup.suffix == ".pgdump"
        calls = log.read_text().splitlines()
        assert any(" exec -T postgres sh -c exec psql " in c for c in calls), calls
        assert any(" exec -T postgres sh -c exec pg_dump " in c for c in calls), calls

        log.write_text("")
        rc, _, stderr = await _script("restore.sh", "", str(backup), env_extra=env)
        assert rc == 2 and "refusing to overwrite" in stderr, stderr
        rc, _, stderr = await _script("restore.sh", "", str(backup), "--yes", env_extra=env)
        assert rc == 0, stderr
        calls = [c.split(" ", 3)[-1] for c in log.read_text().splitlines() if " -f " in c]
        steps = [c for c in calls if c.startswith(("stop", "start", "run"))]
        assert steps == [
            "stop gateway",  # only once the file and the target were checked (not when refused)
            "run --rm --no-deps gateway python -m app.cli migrate",
            "start gateway",
        ], calls
        assert await _counts(url, tmp_path) == {
            "users": 2, "conversations": 0, "messages": 0, "requests": 0
        }  # fmt: skip
    finally:
        await drop_pg_database(url)


async def test_compose_mode_from_a_checkout_whose_path_has_spaces(tmp_path: Path) -> None:
    """The compose file's path was handed to dbbackup.py inside one string that it split on
    spaces: in a checkout at `/srv/my repo` every compose backup and restore failed."""
    from tests.conftest import require_postgres

    require_postgres()
    url = await create_pg_database("gw_compose_sp")
    try:
        await _some_data(url, tmp_path)
        repo = tmp_path / "my repo"
        repo.mkdir()
        for name in ("scripts", "gateway", "docker-compose.yml"):
            (repo / name).symlink_to(REPO_DIR / name)
        env, log = _fake_docker(tmp_path, url)
        out = tmp_path / "b"
        rc, stdout, stderr = await _script(
            "backup.sh", "", "--out", str(out), env_extra=env, repo=repo
        )
        assert rc == 0, stderr
        assert f"-f {repo}/docker-compose.yml exec -T postgres" in log.read_text()
        backup = Path(stdout.strip().splitlines()[-1])
        rc, _, stderr = await _script(
            "restore.sh", "", str(backup), "--yes", env_extra=env, repo=repo
        )
        assert rc == 0, stderr
    finally:
        await drop_pg_database(url)


async def test_backup_keep_prunes_the_oldest(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keep.db'}"
    await _some_data(url, tmp_path)
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not a backup: never touched
    made = []
    for _ in range(3):
        rc, stdout, stderr = await _script(
            "backup.sh", url, "--out", str(out), env_extra={"BACKUP_KEEP": "2"}
        )
        assert rc == 0, stderr
        made.append(Path(stdout.strip().splitlines()[-1]))
    left = sorted(p.name for p in out.iterdir())
    expected = sorted(
        [b.name + sfx for b in made[1:] for sfx in ("", ".sha256", ".json")] + ["notes.txt"]
    )
    assert left == expected


async def test_backup_into_an_unusable_folder_says_why(tmp_path: Path) -> None:
    """`--out` naming a file, or a folder that cannot be made: one clear line and exit 1, no
    Python traceback, no claim that a database client is missing, nothing left behind."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'out.db'}"
    await _some_data(url, tmp_path)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("mine")
    for out in (a_file, a_file / "sub", Path("/proc/no-such-folder")):
        rc, stdout, stderr = await _script("backup.sh", url, "--out", str(out))
        assert rc == 1, (out, stderr)
        assert "Traceback" not in stderr and "client" not in stderr, (out, stderr)
        assert f"cannot write backups to {out}" in stderr, (out, stderr)
        assert not stdout.strip(), stdout
    assert a_file.read_text() == "mine"


async def test_sqlite_paths_with_uri_characters(tmp_path: Path) -> None:
    """SQLite is opened read-only through a `file:` URI: a `#` in the database's path cut the
    URI there, so backup.sh created and backed up an empty database beside it (exit 0), and
    restore.sh found the non-empty target "empty" and replaced it without --yes; a `%20`
    failed with a traceback. Both engines' other paths are plain: this is SQLite's own."""
    import sqlite3

    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    await _some_data(url, tmp_path)
    odd = tmp_path / "a#b%20c"
    odd.mkdir()
    source = sqlite3.connect(tmp_path / "plain.db")
    copy = sqlite3.connect(odd / "g.db")
    source.backup(copy)
    copy.close()
    source.close()
    odd_url = f"sqlite+aiosqlite:///{odd / 'g.db'}"
    rc, stdout, stderr = await _script("backup.sh", odd_url, "--out", str(tmp_path / "b"))
    assert rc == 0, stderr
    backup = Path(stdout.strip().splitlines()[-1])
    manifest = json.loads(backup.with_name(backup.name + ".json").read_text())
    assert manifest["row_counts"]["users"] == 2, manifest
    assert not (tmp_path / "a").exists()  # no empty database made where the URI was cut
    rc, _, stderr = await _script("restore.sh", odd_url, str(backup))
    assert rc == 2 and "refusing to overwrite" in stderr and "2 users" in stderr, stderr
    rc, _, stderr = await _script("restore.sh", odd_url, str(backup), "--yes")
    assert rc == 0, stderr


async def test_restore_refuses_a_backup_from_a_newer_release(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    """A backup whose schema revision this release's migrations do not know is refused before
    the target is touched (migrating it "to head" would fail after replacing the data)."""
    if database_url.startswith("sqlite"):
        source = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
    else:
        source = await create_pg_database("gw_newer")
    try:
        await _some_data(source, tmp_path)
        engine = create_engine(make_settings(source, tmp_path), source)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = 'f999'"))
        finally:
            await engine.dispose()
        rc, stdout, stderr = await _script("backup.sh", source, "--out", str(tmp_path / "b"))
        assert rc == 0, stderr
        backup = Path(stdout.strip().splitlines()[-1])
        await _some_data(fresh_url, tmp_path)
        untouched = await _rows(fresh_url, tmp_path)
        rc, _, stderr = await _script("restore.sh", fresh_url, str(backup), "--yes")
        assert rc == 3 and "revision f999" in stderr and "does not know" in stderr, stderr
        assert await _rows(fresh_url, tmp_path) == untouched
    finally:
        if not source.startswith("sqlite"):
            await drop_pg_database(source)


async def test_a_failure_while_applying_the_dump_rolls_everything_back(tmp_path: Path) -> None:
    """The tables are dropped and the dump applied in one psql transaction: a statement failing
    half-way (here after the drops) leaves the database exactly as it was."""
    import importlib.util

    from tests.conftest import require_postgres

    require_postgres()
    spec = importlib.util.spec_from_file_location("dbbackup", REPO_DIR / "scripts" / "dbbackup.py")
    assert spec is not None and spec.loader is not None
    dbbackup = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dbbackup", dbbackup)  # its dataclasses look their module up
    spec.loader.exec_module(dbbackup)
    url = await create_pg_database("gw_rollback")
    try:
        await _some_data(url, tmp_path)
        before = await _rows(url, tmp_path)
        script = tmp_path / "bad.sql"
        script.write_text("CREATE TABLE public.half (id int);\nSELECT 1/0;\n")
        with pytest.raises(dbbackup.Failure, match="rolled back"):
            await asyncio.to_thread(
                dbbackup._apply_in_one_transaction, dbbackup.postgres_from_url(url), script
            )
        assert await _rows(url, tmp_path) == before
    finally:
        await drop_pg_database(url)


async def test_an_older_backup_is_migrated_to_head(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    """A backup taken at an older schema revision (0006) is restored and migrated to head."""
    from app.db.migrate import migrate

    if database_url.startswith("sqlite"):
        source = f"sqlite+aiosqlite:///{tmp_path / 'older.db'}"
    else:
        source = await create_pg_database("gw_older")
    try:
        engine = create_engine(make_settings(source, tmp_path), source)
        try:
            await migrate(engine, "0006")
        finally:
            await engine.dispose()
        rc, stdout, stderr = await _script("backup.sh", source, "--out", str(tmp_path / "b"))
        assert rc == 0, stderr
        backup = Path(stdout.strip().splitlines()[-1])
        assert (
            json.loads(backup.with_name(backup.name + ".json").read_text())["alembic_revision"]
            == "0006"
        )
        rc, _, stderr = await _script("restore.sh", fresh_url, str(backup))
        assert rc == 0, stderr
        engine = create_engine(make_settings(fresh_url, tmp_path), fresh_url)
        try:
            async with engine.connect() as conn:
                revision = await conn.execute(text("SELECT version_num FROM alembic_version"))
                head = revision.scalar_one()
        finally:
            await engine.dispose()
        from alembic.script import ScriptDirectory

        from app.db.migrate import alembic_config

        assert head == ScriptDirectory.from_config(alembic_config()).get_current_head() != "0006"
    finally:
        if not source.startswith("sqlite"):
            await drop_pg_database(source)
