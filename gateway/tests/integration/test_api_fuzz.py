"""Every route of the OpenAPI document, fuzzed by schemathesis against a real gateway process on
Postgres (in front of the simulator): no 5xx, every status, content type and body as the document
says, no error-level log line. Client faults the document cannot express (headers, NUL paths)
are sent by hand to the same kind of process; the chat bodies' hostile cases are in
test_chat_validation.py (the two chat routes are not in the document yet)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import (
    PG_ADMIN_DSN,
    TEST_JWT_SECRET,
    create_pg_database,
    drop_pg_database,
    gateway_env,
    login,
    require_postgres,
    wait_live,
)
from tests.integration.test_server_process import gateway_process

ST = Path(sys.executable).parent / "st"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
# operations that can revoke the fuzzer's own token (a new password for its account): fuzzed
# last, by an admin whose id the fuzzer never sees
REVOKING = ("PATCH /api/admin/users/{user_id}", "POST /api/auth/change-password")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    require_postgres()
    url = await create_pg_database("gw_fuzz")
    try:
        yield url
    finally:
        await drop_pg_database(url)


def gateway_env_for(url: str, simulator: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    return gateway_env(
        DATABASE_URL=url,
        JWT_SECRET=TEST_JWT_SECRET,
        VLLM_BASE_URL=f"{simulator.url}/v1",
        RATE_LIMIT_REQUESTS_PER_MINUTE="0",
        LOGIN_MAX_FAILURES="1000000",  # the fuzzer's wrong logins must not lock it out
        UI_DIST_DIR=str(tmp_path / "ui"),
        **extra,
    )


def error_lines(log_path: Path) -> list[str]:
    return [
        line
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and json.loads(line).get("level") in ("error", "critical")
    ]


def run_schemathesis(base: str, token: str, har: Path, *selection: str) -> list[dict[str, Any]]:
    """One bounded pass; returns the HAR entries (every request sent and its response)."""
    argv = [
        str(ST),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "6",
        "--seed",
        "12",
        "--no-shrink",
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--no-color",
        *selection,
    ]
    # run from the report's folder: schemathesis keeps a cache (`.schemathesis/`) in its cwd
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, check=False, cwd=har.parent
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    entries: list[dict[str, Any]] = json.loads(har.read_text())["log"]["entries"]
    return entries


async def test_fuzzing_every_documented_route_finds_no_server_error(
    postgres_url: str, simulator: Any, tmp_path: Path
) -> None:
    log_path = tmp_path / "gateway.log"
    env = gateway_env_for(postgres_url, simulator, tmp_path)
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            doc = (await c.get("/openapi.json")).json()
            admin = await login(c, "admin", "admin123")
        exclude = [arg for name in REVOKING for arg in ("--exclude-name", name)]
        entries = run_schemathesis(base, admin, tmp_path / "a.har", *exclude)

        # the revoking operations, by a second admin with an id no response has shown
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            r = await c.post(
                "/api/admin/users",
                headers={"Authorization": f"Bearer {admin}"},
                json={"username": "fuzz-admin", "password": "fuzz-admin-pw", "role": "admin"},
            )
            assert r.status_code == 201, r.text
            conn = await asyncpg.connect(
                PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + postgres_url.rsplit("/", 1)[1]
            )
            try:
                await conn.execute("UPDATE users SET id = 7000000123 WHERE username = 'fuzz-admin'")
            finally:
                await conn.close()
            second = await login(c, "fuzz-admin", "fuzz-admin-pw")
        include = [arg for name in REVOKING for arg in ("--include-name", name)]
        entries += run_schemathesis(base, second, tmp_path / "b.har", *include)

    statuses = Counter(e["response"]["status"] for e in entries)
    documented = {
        (method.upper(), template)
        for template, operations in doc["paths"].items()
        for method in operations
    }
    patterns = {
        template: re.compile("^" + re.sub(r"\{[^}/]+\}", "[^/]+", template) + "$")
        for template in doc["paths"]
    }
    sent = {
        (e["request"]["method"], template)
        for e in entries
        for template, pattern in patterns.items()
        if pattern.match(urlsplit(e["request"]["url"]).path)
    }
    print(f"schemathesis: {len(entries)} requests, statuses {dict(sorted(statuses.items()))}")
    assert len(entries) >= 300, statuses
    assert not [s for s in statuses if s >= 500], statuses
    assert sum(n for s, n in statuses.items() if 200 <= s < 300) >= 50, statuses
    assert documented <= sent, documented - sent  # every documented operation was exercised
    assert error_lines(log_path) == []


async def test_client_faults_on_a_real_server_are_4xx_and_quiet(
    postgres_url: str, simulator: Any, tmp_path: Path
) -> None:
    ui = tmp_path / "ui"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text("<!doctype html><title>ui</title>")
    (ui / "assets" / "app.js").write_text("console.log(1)")
    log_path = tmp_path / "gateway.log"
    env = gateway_env_for(postgres_url, simulator, tmp_path)
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            for path in ("/%00", "/assets/app.js%00", "/api/conversations/%00"):
                r = await c.get(path)
                assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
            assert (await c.get("/" + "a" * 4000)).status_code == 200  # a client-side route
            big = await c.get("/health/live", headers={"X-Big": "v" * (1024 * 1024)})
            assert big.status_code == 431 and big.json()["error"]["code"] == "headers_too_large"
            many = await c.get("/health/live", headers=[(f"x-h{i}", "v") for i in range(5000)])
            assert many.status_code == 431
            token = await login(c, "test", "test")
            auth = {"Authorization": f"Bearer {token}"}
            r = await c.get("/api/conversations?q=%00", headers=auth)
            assert r.status_code == 422 and r.json()["error"]["message"].startswith("q:")
            r = await c.post(
                "/api/conversations", headers=auth, json={"title": "t\u0000", "system_prompt": "x"}
            )
            assert r.status_code == 422 and r.json()["error"]["message"].startswith("title:")
            assert (await c.get("/health/live")).status_code == 200
    assert error_lines(log_path) == []
