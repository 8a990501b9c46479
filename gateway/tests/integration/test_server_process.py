"""The gateway as a real process (`python -m app.cli serve`), as the README's command runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import (
    GATEWAY_DIR,
    TEST_JWT_SECRET,
    empty_tables,
    gateway_env,
    make_settings,
    wait_live,
)
from tests.ports import free_port


@contextmanager
def gateway_process(
    env: dict[str, str], log_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=GATEWAY_DIR,
            env=env | {"GATEWAY_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_serves_login_and_health(database_url: str, tmp_path: Path) -> None:
    await empty_tables(database_url, make_settings(database_url, tmp_path))
    env = gateway_env(DATABASE_URL=database_url, JWT_SECRET=TEST_JWT_SECRET)
    log_path = tmp_path / "gateway.log"
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.post(
                "/api/auth/login", json={"username": "admin", "password": "admin123"}
            )
            assert r.status_code == 200 and r.json()["token_type"] == "bearer"
            me = await client.get(
                "/api/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
            )
            assert me.json()["role"] == "admin"
            health = (await client.get("/health")).json()
            assert health["services"]["database"]["status"] == "up"
            assert health["status"] in ("healthy", "degraded")
    records = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    assert any(r.get("path") == "/api/auth/login" and r.get("status_code") == 200 for r in records)
    assert "admin123" not in log_path.read_text()
    # SIGTERM is a graceful shutdown: the lifespan ran to its end (uvicorn re-raises the signal)
    assert any(r.get("event") == "gateway stopped" for r in records)


def test_production_refuses_default_secret(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=GATEWAY_DIR,
        env=gateway_env(
            ENVIRONMENT="production", DEVELOPMENT_MODE="true", SQLITE_PATH=str(tmp_path / "g.db")
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr and "DEVELOPMENT_MODE" in result.stderr
    assert "Traceback" not in result.stderr


async def test_production_without_admin_refuses_then_bootstraps_fromgateway_env(
    database_url: str, tmp_path: Path
) -> None:
    await empty_tables(database_url, make_settings(database_url, tmp_path))
    env = gateway_env(
        DATABASE_URL=database_url, ENVIRONMENT="production", JWT_SECRET=TEST_JWT_SECRET
    )
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        cwd=GATEWAY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "without an admin account" in refused.stdout + refused.stderr

    env |= {"ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "a-strong-admin-pass"}
    log_path = tmp_path / "prod.log"
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base) as client:
            ok = await client.post(
                "/api/auth/login", json={"username": "root", "password": "a-strong-admin-pass"}
            )
            assert ok.status_code == 200
            for user, pw in (("admin", "admin123"), ("test", "test")):
                r = await client.post("/api/auth/login", json={"username": user, "password": pw})
                assert r.status_code == 401  # no demo accounts in production
            assert (await client.get("/docs")).status_code == 404


def test_cli_migrate_and_create_admin(tmp_path: Path) -> None:
    env = gateway_env(SQLITE_PATH=str(tmp_path / "cli.db"))
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "app.cli", *args],
        cwd=GATEWAY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run("migrate").returncode == 0
    created = run("create-admin", "--username", "ops", "--password", "ops-password-1")
    assert created.returncode == 0 and "created" in created.stdout
    again = run("create-admin", "--username", "ops", "--password", "ops-password-1")
    assert again.returncode == 1 and "already exists" in again.stdout
