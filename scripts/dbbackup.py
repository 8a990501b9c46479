#!/usr/bin/env python3
"""Back up and restore the gateway's database (run by scripts/backup.sh and scripts/restore.sh).

Standard library only, so it runs with any Python >= 3.11 (compose mode needs no gateway venv).

Targets:
  --url URL      the gateway's database URL (SQLAlchemy form: sqlite+aiosqlite:///path or
                 postgresql+asyncpg://user:pass@host:port/db); Postgres through the client tools
                 (psql, pg_dump, pg_restore) with the password in PGPASSWORD, never in argv.
  --compose      the compose stack's postgres service, through `docker compose exec -T postgres`
                 (the tools of the server's own image, so their versions always match).

A backup is one file named with the UTC time, `gateway-YYYYMMDDTHHMMSSZ.pgdump` (pg_dump's custom
format) or `.sqlite3`, with `NAME.sha256` (sha256sum's format) and `NAME.json` (the engine, the
schema revision and every table's row count) beside it. It is written as `NAME.partial` and
renamed when complete, so a failed backup never leaves a file that looks whole.

Consistency: Postgres: one REPEATABLE READ transaction exports its snapshot, counts every table in
it and holds it while `pg_dump --snapshot` dumps exactly that snapshot, so the counts in the
manifest are those of the dump, i.e. of what was committed at the backup's moment. SQLite: the
online backup API copies the database in one step inside one read transaction (WAL: writers go
on), and the counts are read from the copy.

Restore: checks the sha256 and the file itself (pg_restore reads the whole archive, SQLite runs
an integrity check) before touching the target; refuses a non-empty target without --yes; then
replaces the target in one transaction (Postgres: the public schema's tables dropped and the dump
applied by one psql transaction; SQLite: the backup API into the target), checks the restored
row counts against the manifest. The caller then migrates the database to head.
Exit codes: 0 done, 1 failure, 2 refused (non-empty target without --yes), 3 bad backup file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit

PG_MAGIC = b"PGDMP"
_BACKUP_NAME = re.compile(r"gateway-(\d{8}T\d{6}Z)(?:-(\d+))?\.(?:pgdump|sqlite3)")
SQLITE_MAGIC = b"SQLite format 3\x00"
# the tables whose counts the refusal message names (the others are counted all the same)
SUMMARY_TABLES = ("users", "conversations", "messages", "requests")


class Failure(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def info(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- targets ----------------------------------------------------------------------------------


@dataclass
class Postgres:
    """How to run the Postgres client tools against the target."""

    prefix: list[str]  # argv before the tool's own (compose: docker compose exec ... sh -c)
    env: dict[str, str] = field(default_factory=dict)
    compose: bool = False
    label: str = ""

    def argv(self, tool: str, *args: str) -> list[str]:
        if self.compose:
            # the service's own user and database, from the container's environment
            quoted = " ".join(shlex.quote(a) for a in args)
            script = f'exec {tool} -U "$POSTGRES_USER" -d "$POSTGRES_DB" {quoted}'
            if tool == "pg_restore":  # pg_restore reads the archive; no connection needed
                script = f"exec pg_restore {quoted}"
            return [*self.prefix, "sh", "-c", script]
        return [tool, *args]

    def run_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def postgres_from_url(url: str) -> Postgres:
    parts = urlsplit(url)
    env = {"PGCONNECT_TIMEOUT": "10"}
    if parts.hostname:
        env["PGHOST"] = parts.hostname
    if parts.port:
        env["PGPORT"] = str(parts.port)
    if parts.username:
        env["PGUSER"] = unquote(parts.username)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise Failure(f"no database name in the database URL ({parts.hostname})")
    env["PGDATABASE"] = database
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key in ("ssl", "sslmode") and value:
            env["PGSSLMODE"] = {"true": "require"}.get(value, value)
    label = f"postgres {env.get('PGHOST', 'localhost')}:{env.get('PGPORT', '5432')}/{database}"
    return Postgres(prefix=[], env=env, label=label)


def postgres_compose(compose_cmd: str) -> Postgres:
    prefix = [*shlex.split(compose_cmd), "exec", "-T", "postgres"]
    return Postgres(prefix=prefix, compose=True, label="the compose stack's postgres")


def sqlite_path(url: str) -> Path:
    # sqlite+aiosqlite:///relative.db or ////absolute.db
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    if not rest or rest.startswith(":memory:"):
        raise Failure(f"not a SQLite database file: {url}")
    return Path(rest.split("?", 1)[0])


def target_of(args: argparse.Namespace) -> Postgres | Path:
    if args.compose:
        return postgres_compose(args.compose_cmd)
    if not args.url:
        raise Failure("no database: give --url or --compose")
    if args.url.split(":", 1)[0].split("+", 1)[0] == "sqlite":
        return sqlite_path(args.url)
    if args.url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return postgres_from_url(args.url)
    raise Failure(f"unsupported database URL scheme: {args.url.split(':', 1)[0]}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- a psql session held open (one transaction across several statements) ----------------


class Psql:
    def __init__(self, pg: Postgres) -> None:
        argv = pg.argv("psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1")
        self.proc = subprocess.Popen(  # noqa: S603 - our own argv
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=pg.run_env(),
        )

    def query(self, sql: str) -> list[list[str]]:
        """Rows of one statement; a marker line ends them (rows may be empty)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo __end__\n")
        self.proc.stdin.flush()
        rows: list[list[str]] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise Failure(f"psql failed: {self.stderr()}")
            line = line.rstrip("\n")
            if line == "__end__":
                return rows
            if line:
                rows.append(line.split("\t"))

    def stderr(self) -> str:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip() or f"exit code {self.proc.returncode}"

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("COMMIT;\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pg_counts(session: Psql) -> dict[str, int]:
    tables = [
        r[0]
        for r in session.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    ]
    if not tables:
        return {}
    union = " UNION ALL ".join(
        f"SELECT {_literal(t)}, count(*) FROM public.{_ident(t)}"  # noqa: S608 - quoted names
        for t in tables
        if t != "alembic_version"
    )
    return {name: int(n) for name, n in session.query(union)} if union else {}


def pg_revision(session: Psql) -> str | None:
    found = session.query(
        "SELECT count(*) FROM pg_tables"
        " WHERE schemaname = 'public' AND tablename = 'alembic_version'"
    )
    if found[0][0] == "0":
        return None
    rows = session.query("SELECT version_num FROM public.alembic_version")
    return rows[0][0] if rows else None


# --- SQLite -----------------------------------------------------------------------------------


def sqlite_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the database file at `path`. Through a `file:` URI, with the
    path percent-encoded: a `#` or `%` in it would otherwise cut or garble the URI, and SQLite
    would open (and create) another, empty file."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)


def sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {
        t: int(conn.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0])  # noqa: S608
        for t in tables
        if t != "alembic_version"
    }


def sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


# --- backup -----------------------------------------------------------------------------------


def backup(args: argparse.Namespace) -> Path:
    target = target_of(args)
    out = Path(args.out).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o700)  # password hashes and conversations: the operator's eyes only
    except OSError as exc:
        raise Failure(f"cannot write backups to {out}: {exc.strerror or exc}") from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "sqlite3" if isinstance(target, Path) else "pgdump"
    final = out / f"gateway-{stamp}.{suffix}"
    n = 1
    while final.exists():  # two backups in one second
        final = out / f"gateway-{stamp}-{n}.{suffix}"
        n += 1
    partial = final.with_name(final.name + ".partial")
    try:
        if isinstance(target, Path):
            counts, revision = _backup_sqlite(target, partial)
            engine = "sqlite"
        else:
            counts, revision = _backup_postgres(target, partial)
            engine = "postgresql"
        digest = sha256_of(partial)
        partial.rename(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    final.with_name(final.name + ".sha256").write_text(f"{digest}  {final.name}\n")
    manifest = {
        "file": final.name,
        "engine": engine,
        "created_at": datetime.now(UTC).isoformat(),
        "alembic_revision": revision,
        "bytes": final.stat().st_size,
        "sha256": digest,
        "row_counts": counts,
    }
    final.with_name(final.name + ".json").write_text(json.dumps(manifest, indent=2) + "\n")
    if args.keep > 0:
        _prune(out, args.keep)
    info(
        f"backup of {engine} written ({final.stat().st_size} bytes; "
        + ", ".join(f"{counts.get(t, 0)} {t}" for t in SUMMARY_TABLES)
        + ")"
    )
    return final


def _prune(out: Path, keep: int) -> None:
    """Keep the newest `keep` complete backups in `out` (names sort by their UTC time)."""
    named = ((_BACKUP_NAME.fullmatch(p.name), p) for p in out.iterdir())
    backups = sorted(((m.group(1), int(m.group(2) or 0)), p) for m, p in named if m and p.is_file())
    for _, old in backups[:-keep]:
        for path in (old, old.with_name(old.name + ".sha256"), old.with_name(old.name + ".json")):
            path.unlink(missing_ok=True)
        info(f"removed the old backup {old.name} (BACKUP_KEEP={keep})")


def _backup_sqlite(source: Path, partial: Path) -> tuple[dict[str, int], str | None]:
    if not source.is_file():
        raise Failure(f"no SQLite database at {source}")
    src = sqlite_read_only(source)
    dst = sqlite3.connect(partial)
    try:
        # pages=-1: the whole database in one step, inside one read transaction: a snapshot
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise Failure(f"the copy fails SQLite's integrity check: {check}")
        return sqlite_counts(dst), sqlite_revision(dst)
    finally:
        dst.close()
        src.close()


def _backup_postgres(pg: Postgres, partial: Path) -> tuple[dict[str, int], str | None]:
    session = Psql(pg)
    try:
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = session.query("SELECT pg_export_snapshot()")[0][0]
        counts = pg_counts(session)  # in the exported snapshot: exactly what pg_dump sees
        revision = pg_revision(session)
        with partial.open("wb") as out:
            argv = pg.argv("pg_dump", "-Fc", "--no-owner", "--no-acl", f"--snapshot={snapshot}")
            done = subprocess.run(  # noqa: S603 - our own argv
                argv, stdout=out, stderr=subprocess.PIPE, env=pg.run_env(), check=False
            )
        if done.returncode != 0:
            raise Failure(f"pg_dump failed: {done.stderr.decode(errors='replace').strip()}")
        with partial.open("rb") as f:
            if f.read(5) != PG_MAGIC:
                raise Failure("pg_dump wrote no archive")
        return counts, revision
    finally:
        session.close()


# --- restore ----------------------------------------------------------------------------------


def _verify_file(file: Path) -> dict[str, object]:
    if not file.is_file():
        raise Failure(f"no backup file at {file}", 3)
    sums = file.with_name(file.name + ".sha256")
    if not sums.is_file():
        raise Failure(f"no checksum file beside the backup ({sums.name}); refusing to restore", 3)
    expected = sums.read_text().split()[0].lower() if sums.read_text().split() else ""
    actual = sha256_of(file)
    if actual != expected:
        raise Failure(
            f"{file.name} does not match its sha256 (expected {expected or 'nothing'}, got "
            f"{actual}): the file is corrupted or truncated. Nothing was changed.",
            3,
        )
    manifest_path = file.with_name(file.name + ".json")
    if manifest_path.is_file():
        try:
            manifest: dict[str, object] = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise Failure(f"{manifest_path.name} is not valid JSON ({exc})", 3) from exc
        return manifest
    return {}


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts.get(t, 0)} {t}" for t in SUMMARY_TABLES)


def _check_counts(restored: dict[str, int], manifest: dict[str, object]) -> None:
    expected = manifest.get("row_counts")
    if not isinstance(expected, dict):
        return
    wrong = {t: (n, restored.get(t)) for t, n in expected.items() if restored.get(t) != n}
    if wrong:
        detail = ", ".join(
            f"{t}: {got} restored, {n} in the backup" for t, (n, got) in wrong.items()
        )
        raise Failure(f"the restored row counts differ from the backup's manifest: {detail}")
    info(f"row counts match the backup's manifest ({_summary(restored)})")


def restore(args: argparse.Namespace) -> None:
    file = Path(args.file).resolve()
    manifest = _verify_file(file)
    with file.open("rb") as f:
        head = f.read(16)
    target = target_of(args)
    if isinstance(target, Path):
        if head != SQLITE_MAGIC:
            raise Failure(f"{file.name} is not a SQLite backup, and the target is SQLite", 3)
        _restore_sqlite(file, target, args.yes, manifest, args.check_only, args.migrations)
    else:
        if not head.startswith(PG_MAGIC):
            raise Failure(f"{file.name} is not a pg_dump archive, and the target is Postgres", 3)
        _restore_postgres(file, target, args.yes, manifest, args.check_only, args.migrations)


def _check_revision(file: Path, revision: str | None, migrations: str | None) -> None:
    """The backup's schema revision must be one this release's migrations know: a backup from a
    newer release cannot be migrated "to head" by an older one."""
    if revision is None:
        raise Failure(f"{file.name} holds no gateway schema (no alembic_version row)", 3)
    if not migrations:
        return
    pattern = re.compile(r'^revision(?::\s*str)?\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)
    known = {
        m.group(1)
        for path in Path(migrations).glob("*.py")
        for m in pattern.finditer(path.read_text(encoding="utf-8"))
    }
    if revision not in known:
        raise Failure(
            f"{file.name} is at schema revision {revision}, which this release does not know "
            "(a backup from a newer release?): restore it with that release. Nothing was changed.",
            3,
        )


def _script_revision(script: Path) -> str | None:
    """The alembic_version row in pg_restore's SQL (a COPY block)."""
    with script.open(encoding="utf-8", errors="replace") as f:
        lines = iter(f)
        for line in lines:
            if line.startswith("COPY public.alembic_version "):
                row = next(lines, "\\.").rstrip("\n")
                return None if row == "\\." else row.split("\t")[0]
    return None


def _refuse(label: str, counts: dict[str, int]) -> Failure:
    return Failure(
        f"refusing to overwrite {label}: it is not empty ({_summary(counts)}). Restoring replaces "
        "everything in it; stop the gateway and run again with --yes.",
        2,
    )


def _restore_sqlite(
    file: Path,
    target: Path,
    yes: bool,
    manifest: dict[str, object],
    check_only: bool,
    migrations: str | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        staged = Path(tmp) / "staged.sqlite3"
        shutil.copyfile(file, staged)
        src = sqlite3.connect(staged)
        try:
            try:
                check = src.execute("PRAGMA integrity_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise Failure(f"{file.name} is not a readable SQLite database ({exc})", 3) from exc
            if check != "ok":
                raise Failure(f"{file.name} fails SQLite's integrity check: {check}", 3)
            _check_revision(file, sqlite_revision(src), migrations)
            if target.exists() and target.stat().st_size > 0:
                existing = sqlite_read_only(target)
                try:
                    counts = sqlite_counts(existing)
                finally:
                    existing.close()
                if sum(counts.values()) > 0 and not yes:
                    raise _refuse(f"the SQLite database {target}", counts)
            if check_only:
                info(f"{file.name} is sound and may be restored into {target}")
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            dst = sqlite3.connect(target, timeout=30)
            try:
                # one step, in one write transaction on the target: all of it or none of it
                src.backup(dst, pages=-1)
                restored = sqlite_counts(dst)
            finally:
                dst.close()
        finally:
            src.close()
    info(f"restored {file.name} into {target}")
    _check_counts(restored, manifest)


# Drops what the dump recreates: every table, view, sequence and type of the public schema.
_PG_CLEAR = """
DO $clear$
DECLARE r record;
BEGIN
  FOR r IN SELECT format('DROP VIEW IF EXISTS public.%I CASCADE', viewname) AS q
             FROM pg_views WHERE schemaname = 'public'
  UNION ALL SELECT format('DROP TABLE IF EXISTS public.%I CASCADE', tablename)
             FROM pg_tables WHERE schemaname = 'public'
  LOOP EXECUTE r.q; END LOOP;
  FOR r IN SELECT format('DROP SEQUENCE IF EXISTS public.%I CASCADE', sequencename) AS q
             FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL SELECT format('DROP TYPE IF EXISTS public.%I CASCADE', t.typname)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype IN ('e', 'c', 'd', 'r')
              AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
  LOOP EXECUTE r.q; END LOOP;
END
$clear$;
"""


def _restore_postgres(
    file: Path,
    pg: Postgres,
    yes: bool,
    manifest: dict[str, object],
    check_only: bool,
    migrations: str | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        script = Path(tmp) / "restore.sql"
        # the whole archive read and turned into SQL first: a damaged one fails here, untouched
        with file.open("rb") as archive, script.open("wb") as out:
            argv = pg.argv("pg_restore", "--no-owner", "--no-acl", "-f", "-")
            done = subprocess.run(  # noqa: S603 - our own argv
                argv, stdin=archive, stdout=out, stderr=subprocess.PIPE, env=pg.run_env(),
                check=False,
            )  # fmt: skip
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise Failure(f"{file.name} is not a readable pg_dump archive: {err}", 3)
        _check_revision(file, _script_revision(script), migrations)
        session = Psql(pg)
        try:
            counts = pg_counts(session)
        finally:
            session.close()
        if sum(counts.values()) > 0 and not yes:
            raise _refuse(pg.label, counts)
        if check_only:
            info(f"{file.name} is sound and may be restored into {pg.label}")
            return
        _apply_in_one_transaction(pg, script)
    session = Psql(pg)
    try:
        restored = pg_counts(session)
    finally:
        session.close()
    info(f"restored {file.name} into {pg.label}")
    _check_counts(restored, manifest)


def _apply_in_one_transaction(pg: Postgres, script: Path) -> None:
    argv = pg.argv("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1")
    # stderr to a file, not a pipe: notices nobody reads could otherwise fill the pipe and stall
    # psql while this process is still writing the script to it
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
            env=pg.run_env(),
        )  # fmt: skip
        assert proc.stdin is not None
        stdin: IO[bytes] = proc.stdin
        try:
            stdin.write(b"BEGIN;\nSET client_min_messages = warning;\n" + _PG_CLEAR.encode())
            with script.open("rb") as f:
                shutil.copyfileobj(f, stdin)
            # reached only when the whole script was sent: a psql that stopped on an error never
            # sees it, and its connection closing rolls everything back
            stdin.write(b"\nCOMMIT;\n")
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        code = proc.wait()
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip()
    if code != 0:
        raise Failure(f"the restore failed and was rolled back (nothing changed): {err}")


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("backup", "restore"):
        p = sub.add_parser(name)
        p.add_argument("--url", help="the database URL (SQLAlchemy form)")
        p.add_argument("--compose", action="store_true", help="the compose stack's postgres")
        p.add_argument("--compose-cmd", default="docker compose", help="how to call compose")
        if name == "backup":
            p.add_argument("--out", required=True, help="the folder of the backups")
            p.add_argument("--keep", type=int, default=0, help="keep the newest N (0: all)")
        else:
            p.add_argument("file")
            p.add_argument("--yes", action="store_true", help="replace a non-empty database")
            p.add_argument(
                "--check-only", action="store_true", help="verify the file and the target only"
            )
            p.add_argument("--migrations", help="the folder of the migrations (revision check)")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            print(backup(args))
        else:
            restore(args)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except FileNotFoundError as exc:
        if exc.filename and "/" not in str(exc.filename):  # a program: psql, pg_dump, docker...
            print(f"error: {exc.filename}: not found (is the client installed?)", file=sys.stderr)
        else:
            print(f"error: {exc.filename or exc}: no such file or folder", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only folder: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
