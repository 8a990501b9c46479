"""Shared fixtures.

Every test that touches the database runs twice: on SQLite and on the real Postgres at
127.0.0.1:5432. Each engine gets one uniquely named database per test session (dropped at the
end); tables are emptied before each test. Postgres missing is a skip on a laptop but a
failure in CI (CI=true or REQUIRE_POSTGRES=1), so a green CI run means the Postgres tests ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import delete

from app.core.config import Settings
from app.db.base import Base
from app.db.engine import create_engine
from app.main import create_app
from tests.ports import free_port

SHARED_REDIS = "redis://127.0.0.1:6379/0"  # the machine's Redis; each test keys under its prefix

pytest_plugins = ["tests.docker_engine"]

GATEWAY_DIR = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_JWT_SECRET = "test-secret-" + "x" * 40
REQUIRE_POSTGRES = os.environ.get("CI") == "true" or os.environ.get("REQUIRE_POSTGRES") == "1"


async def _pg_admin() -> asyncpg.Connection:
    return await asyncpg.connect(PG_ADMIN_DSN, timeout=5)


async def create_pg_database(prefix: str = "gw_test") -> str:
    """Create a uniquely named database and return its async SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await _pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await _pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip without Postgres on a laptop; fail in CI, where a skip would hide a test not run."""
    if not _postgres_available():
        if REQUIRE_POSTGRES:
            pytest.fail("Postgres at 127.0.0.1:5432 is required in CI but is not reachable")
        pytest.skip("Postgres at 127.0.0.1:5432 not reachable")


@pytest.fixture
async def proxied_postgres() -> AsyncIterator[tuple[str, str, Any]]:
    """A fresh Postgres database: (direct URL, URL through a TCP proxy the test can cut, proxy)."""
    from tests.tcp_proxy import TcpProxy

    require_postgres()
    url = await create_pg_database("gw_outage")
    proxy = TcpProxy(5432)
    await proxy.start()
    try:
        yield url, url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    finally:
        if proxy.running:
            await proxy.stop()
        await drop_pg_database(url)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One database per engine per test session."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
        return
    require_postgres()
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "sqlite_path": tmp_path / "unused.db",
        "jwt_secret": TEST_JWT_SECRET,
        "bcrypt_rounds": 4,  # the cost is a setting; tests need speed, not strength
        "environment": "local",
        "development_mode": False,
        "redis_url": None,
        "vllm_base_url": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens: vllm down
        "log_format": "json",
        "db_startup_timeout_s": 5,
        # many apps start in one test process: freezing its heap would keep every earlier test's
        # garbage for good (the server processes the tests start do freeze)
        "gc_freeze": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def empty_tables(database_url: str, settings: Settings) -> None:
    engine = create_engine(settings, database_url)
    try:
        async with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(delete(table))
    except Exception:  # noqa: S110 - the very first run has no tables yet
        pass
    finally:
        await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    assert settings.database_url is not None
    await empty_tables(settings.database_url, settings)
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post(
        "/api/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await login(client, "admin", "admin123"))


@pytest.fixture
async def user_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await login(client, "test", "test"))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The SPEC's one error shape, with the request id also in the header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    if code is not None:
        assert err["code"] == code, err
    return err


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns a truthy value, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def gateway_env(**extra: str) -> dict[str, str]:
    """The environment of a gateway test process: no inherited database or Redis settings,
    cheap bcrypt, JSON logs, no model server unless given; `extra` on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "DATABASE_", "REDIS_"))
    }
    env.update(
        {
            "BCRYPT_ROUNDS": "4",
            "LOG_FORMAT": "json",
            "VLLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        }
    )
    env.update(extra)
    return env


async def wait_live(base: str, proc: Any = None, log_path: Path | None = None) -> None:
    """Wait for a gateway process's /health/live; fail early, with its log, if it exits."""

    async def up() -> bool:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path is not None else ""
            raise AssertionError(f"gateway exited early:\n{tail}")
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"{base}/health/live", timeout=1)).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(up, timeout=40, interval=0.1)


@pytest.fixture(scope="session")
def gateway_dir() -> Iterator[Path]:
    yield GATEWAY_DIR


class LiveGateway:
    """The gateway served by a real uvicorn server on a free port, inside the test's event loop,
    so streaming, disconnects and timing behave as they do for real clients."""

    def __init__(self, app: FastAPI, port: int) -> None:
        import uvicorn

        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveGateway:
        self._task = asyncio.create_task(self.server.serve())
        await wait_until(lambda: self.server.started or self._task.done(), timeout=30)  # type: ignore[union-attr]
        if self._task.done():
            self._task.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self._task is not None
        await self._task

    def client(self, token: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = bearer(token) if token else {}
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw
        )


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A zero-delay simulator for the module (each test may reset or reconfigure it)."""
    from tests.sim_process import start_simulator

    sim = start_simulator(
        tmp_path_factory.mktemp("sim") / "simulator.log", "--max-model-len", "4096"
    )
    yield sim
    sim.stop()


async def sim_get(sim: Any, path: str) -> Any:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5) as c:
        return (await c.get(path)).json()


async def sim_post(sim: Any, path: str, body: Any) -> Any:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5) as c:
        return (await c.post(path, json=body)).json()


@pytest.fixture
def start_gateway(database_url: str, tmp_path: Path, simulator: Any) -> Any:
    """`async with start_gateway(**settings) as gw:` a live gateway in front of the simulator."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[LiveGateway]:
        values: dict[str, Any] = {"vllm_base_url": f"{simulator.url}/v1", "title_generation": False}
        values.update(overrides)
        settings = make_settings(database_url, tmp_path, **values)
        await empty_tables(database_url, settings)
        await sim_post(simulator, "/sim/reset", {"config": True})
        async with LiveGateway(create_app(settings), free_port()) as gateway:
            yield gateway

    return start


async def read_sse(response: httpx.Response) -> list[Any]:
    """Every `data:` payload of a streamed response, JSON-decoded ("[DONE]" kept as a string)."""
    events: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def content_of(events: list[Any]) -> str:
    return "".join(
        (e["choices"][0]["delta"].get("content") or "")
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """An own key prefix on the shared Redis, deleted afterwards."""
    from redis.asyncio import Redis

    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = Redis.from_url(SHARED_REDIS)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
