"""Per-user rate limits (SPEC §4) on the chat routes: in memory, and on a real Redis shared by
two gateways; a Redis the test starts and kills proves fail-open, fail-closed and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from app.db.models import RequestLog
from app.main import create_app
from tests.conftest import (
    SHARED_REDIS,
    LiveGateway,
    assert_error,
    empty_tables,
    login,
    make_settings,
    read_sse,
    sim_get,
    sim_post,
    wait_live,
    wait_until,
)
from tests.ports import free_port
from tests.tcp_proxy import TcpProxy


def _chat(text: str = "hi") -> dict[str, Any]:
    return {"model": "current", "messages": [{"role": "user", "content": text}]}


async def _token(gw: LiveGateway, user: str = "test", password: str = "test") -> str:
    async with gw.client() as c:
        return await login(c, user, password)


class TestInMemory:
    async def test_requests_per_minute_with_headers(self, start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_requests_per_minute=3) as gw:
            async with gw.client(await _token(gw)) as c:
                remaining = []
                for _ in range(3):
                    r = await c.post("/v1/chat/completions", json=_chat())
                    assert r.status_code == 200
                    assert r.headers["x-ratelimit-limit"] == "3"
                    remaining.append(r.headers["x-ratelimit-remaining"])
                    assert 1 <= int(r.headers["x-ratelimit-reset"]) <= 60
                assert remaining == ["2", "1", "0"]
                refused = await c.post("/api/chat", json=_chat())
                assert_error(refused, 429, "rate_limited")
                assert 1 <= int(refused.headers["retry-after"]) <= 60
                assert refused.headers["x-ratelimit-remaining"] == "0"
                assert refused.headers["x-ratelimit-limit"] == "3"
            assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == 3
            await gw.app.state.usage_recorder.flush()
            async with gw.app.state.session_factory() as session:
                codes = [
                    r.status_code for r in (await session.execute(select(RequestLog))).scalars()
                ]
            assert sorted(codes) == [200, 200, 200, 429]

    async def test_concurrent_streams(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_concurrent_streams=2) as gw:
            token = await _token(gw)
            slow = {**_chat("long [[sim:tokens=30;itl_ms=50]]"), "stream": True}
            async with gw.client(token) as c1, gw.client(token) as c2, gw.client(token) as c3:
                async with (
                    c1.stream("POST", "/v1/chat/completions", json=slow) as r1,
                    c2.stream("POST", "/v1/chat/completions", json=slow) as r2,
                ):
                    assert r1.status_code == r2.status_code == 200
                    third = await c3.post("/v1/chat/completions", json=_chat())
                    assert_error(third, 429, "rate_limited")
                    assert "at once" in third.json()["error"]["message"]
                    assert third.headers["x-ratelimit-limit"] == "2"
                    await read_sse(r1)
                    await read_sse(r2)

                async def admitted_again() -> bool:
                    return (await c3.post("/v1/chat/completions", json=_chat())).status_code == 200

                await wait_until(admitted_again, timeout=5)

    async def test_a_limit_of_one_is_said_in_the_singular(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_concurrent_streams=1) as gw:
            token = await _token(gw)
            slow = {**_chat("long [[sim:tokens=30;itl_ms=50]]"), "stream": True}
            async with gw.client(token) as c1, gw.client(token) as c2:
                async with c1.stream("POST", "/v1/chat/completions", json=slow) as r1:
                    assert r1.status_code == 200
                    second = await c2.post("/v1/chat/completions", json=_chat())
                    assert_error(second, 429, "rate_limited")
                    assert second.json()["error"]["message"].endswith("at most 1 answer at once")
                    await read_sse(r1)

    async def test_tokens_per_day(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_tokens_per_day=20) as gw:
            async with gw.client(await _token(gw)) as c:
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200

                async def refused() -> httpx.Response | None:
                    r = await c.post("/v1/chat/completions", json=_chat())
                    return r if r.status_code == 429 else None

                r = await wait_until(refused, timeout=5)  # the first answer's tokens are counted
                assert "tokens per day" in r.json()["error"]["message"]
                assert int(r.headers["retry-after"]) > 60

    async def test_admin_override_applies_at_once(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_requests_per_minute=100) as gw:
            token = await _token(gw)
            admin = await _token(gw, "admin", "admin123")
            async with gw.client(admin) as a, gw.client(token) as c:
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200
                users = (await a.get("/api/admin/users")).json()["users"]
                test_id = next(u["id"] for u in users if u["username"] == "test")
                r = await a.patch(f"/api/admin/users/{test_id}", json={"requests_per_minute": 2})
                assert r.status_code == 200
            # the same token: the account change cleared this process's credential cache
            async with gw.client(token) as c:
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200
                assert_error(await c.post("/v1/chat/completions", json=_chat()), 429)

    async def test_other_users_are_not_affected(self, start_gateway) -> None:  # type: ignore[no-untyped-def]
        async with start_gateway(rate_limit_requests_per_minute=1) as gw:
            async with gw.client(await _token(gw)) as c:
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 429
            async with gw.client(await _token(gw, "admin", "admin123")) as c:
                assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200


async def test_two_gateways_share_one_limit(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path: Path, simulator, redis_prefix: str
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        vllm_base_url=f"{simulator.url}/v1",
        redis_url=SHARED_REDIS,
        rate_limit_key_prefix=redis_prefix,
        rate_limit_requests_per_minute=5,
    )
    await empty_tables(database_url, settings)
    async with (
        LiveGateway(create_app(settings), free_port()) as one,
        LiveGateway(create_app(settings), free_port()) as two,
    ):
        token = await _token(one)
        statuses = []
        async with one.client(token) as c1, two.client(token) as c2:
            for i in range(8):
                client = c1 if i % 2 == 0 else c2
                statuses.append(
                    (await client.post("/v1/chat/completions", json=_chat())).status_code
                )
        assert statuses == [200] * 5 + [429] * 3
        redis = Redis.from_url(SHARED_REDIS)
        try:
            assert int(await redis.get(f"{redis_prefix}:rpm:{(await _user_id(one))}") or 0) == 8
        finally:
            await redis.aclose()


async def _user_id(gw: LiveGateway) -> int:
    async with gw.client(await _token(gw)) as c:
        return int((await c.get("/api/auth/me")).json()["id"])


class RedisServer:
    """A redis-server of the test's own, on a free port, that the test can kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        async def ping() -> bool:
            client = Redis.from_url(self.url, socket_connect_timeout=0.5)
            try:
                return bool(await client.ping())
            except OSError:
                return False
            except Exception:
                return False
            finally:
                await client.aclose()

        await wait_until(ping, timeout=10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_redis_down_fails_open_or_closed_and_recovers(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path: Path, simulator, own_redis: RedisServer, fail_closed: bool
) -> None:
    await own_redis.wait_ready()
    settings = make_settings(
        database_url,
        tmp_path,
        vllm_base_url=f"{simulator.url}/v1",
        redis_url=own_redis.url,
        rate_limit_requests_per_minute=2,
        rate_limit_fail_closed=fail_closed,
    )
    await empty_tables(database_url, settings)
    await sim_post(simulator, "/sim/reset", {"config": True})
    async with LiveGateway(create_app(settings), free_port()) as gw:
        async with gw.client(await _token(gw)) as c:
            assert [
                (await c.post("/v1/chat/completions", json=_chat())).status_code for _ in range(3)
            ] == [200, 200, 429]

            own_redis.kill()
            down = [await c.post("/v1/chat/completions", json=_chat()) for _ in range(3)]
            if fail_closed:
                for r in down:
                    assert_error(r, 503, "rate_limiter_unavailable")
            else:
                assert [r.status_code for r in down] == [200, 200, 200]
            health = (await c.get("/health")).json()
            assert (
                health["status"] == "degraded" and health["services"]["redis"]["status"] == "down"
            )
            assert gw.app.state.rate_limiter.store_failures_total >= 3

            own_redis.start()
            await own_redis.wait_ready()

            async def enforced_again() -> bool:
                statuses = [
                    (await c.post("/v1/chat/completions", json=_chat())).status_code
                    for _ in range(3)
                ]
                return 429 in statuses

            await wait_until(enforced_again, timeout=10)
            assert (await c.get("/health")).json()["status"] == "healthy"


async def test_login_throttle_is_shared_through_redis(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    from asgi_lifespan import LifespanManager

    settings = make_settings(
        database_url,
        tmp_path,
        redis_url=SHARED_REDIS,
        rate_limit_key_prefix=redis_prefix,
        login_max_failures=4,
    )
    await empty_tables(database_url, settings)
    one, two = create_app(settings), create_app(settings)
    async with LifespanManager(one), LifespanManager(two):
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=a, client=("10.1.2.3", 1000)),
                base_url="http://gw",
            )
            for a in (one, two)
        ]
        bad = {"username": "admin", "password": "wrong"}
        statuses = [
            (await clients[i % 2].post("/api/auth/login", json=bad)).status_code for i in range(4)
        ]
        assert statuses == [401] * 4
        for (
            client
        ) in clients:  # both processes now refuse this client, even with the right password
            r = await client.post(
                "/api/auth/login", json={"username": "admin", "password": "admin123"}
            )
            assert_error(r, 429, "rate_limited")
        for client in clients:
            await client.aclose()


async def test_two_gateway_processes_share_one_limit(  # type: ignore[no-untyped-def]
    tmp_path: Path, simulator, redis_prefix: str
) -> None:
    """The same, with two real `app.cli serve` processes on one SQLite file and one Redis."""
    import sys

    from tests.conftest import GATEWAY_DIR, gateway_env

    env = gateway_env(
        SQLITE_PATH=str(tmp_path / "shared.db"),
        JWT_SECRET="shared-secret-" + "s" * 40,
        VLLM_BASE_URL=f"{simulator.url}/v1",
        REDIS_URL=SHARED_REDIS,
        RATE_LIMIT_KEY_PREFIX=redis_prefix,
        RATE_LIMIT_REQUESTS_PER_MINUTE="5",
    )
    procs, urls, logs = [], [], []
    try:
        for n in range(2):  # one after the other: the second finds the schema migrated
            port = free_port()
            log = (tmp_path / f"gw{n}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                    cwd=GATEWAY_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            url = f"http://127.0.0.1:{port}"
            urls.append(url)
            await wait_live(url, procs[-1])
        async with httpx.AsyncClient(base_url=urls[0]) as c:
            token = await login(c, "test", "test")
        statuses = []
        for i in range(8):
            async with httpx.AsyncClient(
                base_url=urls[i % 2], headers={"Authorization": f"Bearer {token}"}
            ) as c:
                statuses.append(
                    (await c.post("/v1/chat/completions", json=_chat(), timeout=10)).status_code
                )
        assert statuses == [200] * 5 + [429] * 3
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        for log in logs:
            log.close()


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_first_request_after_redis_returns_is_served_and_counted(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path: Path, simulator, own_redis: RedisServer, fail_closed: bool
) -> None:
    """Issue 12 defect 11: the first chat requests and the first login once Redis is back are
    answered (fail-closed used to refuse them with 503) and counted in Redis (fail-open used
    to let them through uncounted), whichever pooled connection they get."""
    await own_redis.wait_ready()
    settings = make_settings(
        database_url,
        tmp_path,
        vllm_base_url=f"{simulator.url}/v1",
        redis_url=own_redis.url,
        rate_limit_requests_per_minute=100,
        rate_limit_concurrent_streams=50,
        rate_limit_fail_closed=fail_closed,
        login_max_failures=3,
    )
    await empty_tables(database_url, settings)
    await sim_post(simulator, "/sim/reset", {"config": True})
    bad = {"username": "admin", "password": "wrong"}
    async with LiveGateway(create_app(settings), free_port()) as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            user_id = (await c.get("/api/auth/me")).json()["id"]
            # requests in several loop turns at once: the pool holds several connections
            many = [c.post("/v1/chat/completions", json=_chat()) for _ in range(8)]
            assert {r.status_code for r in await asyncio.gather(*many)} == {200}
            assert (await c.post("/api/auth/login", json=bad)).status_code == 401

            own_redis.kill()
            for _ in range(2):  # chat only: the login throttle's connection stays as it was
                r = await c.post("/v1/chat/completions", json=_chat())
                assert r.status_code == (503 if fail_closed else 200)
            own_redis.start()
            await own_redis.wait_ready()

            first = await c.post("/v1/chat/completions", json=_chat())
            assert first.status_code == 200, first.text
            assert first.headers["X-RateLimit-Remaining"] == "99"
            again = [c.post("/v1/chat/completions", json=_chat()) for _ in range(8)]
            assert {r.status_code for r in await asyncio.gather(*again)} == {200}
            # the login throttle too: answered, and every failure counted (Redis came back
            # empty, so 3 failures from now on, then 429)
            logins = [(await c.post("/api/auth/login", json=bad)).status_code for _ in range(4)]
            assert logins == [401, 401, 401, 429], logins

        redis = Redis.from_url(own_redis.url)
        try:
            key = f"{settings.rate_limit_key_prefix}:rpm:{user_id}"
            assert int(await redis.get(key) or 0) == 9
        finally:
            await redis.aclose()


# --- the verdict on its way while the model server starts (RateLimiter.begin's overlap) ----------
@pytest.fixture
async def slow_redis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TcpProxy]:
    """The shared Redis behind a proxy that can hold its replies back (for as long as a test
    needs: no command times out into failing open meanwhile)."""
    from app.services import redis_client

    monkeypatch.setattr(redis_client, "COMMAND_TIMEOUT_S", 60.0)
    proxy = TcpProxy(6379)
    await proxy.start()
    yield proxy
    proxy.release_replies()
    await proxy.stop()


@pytest.fixture
async def overlap_gateway(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path: Path, simulator, slow_redis: TcpProxy, redis_prefix: str
) -> AsyncIterator[tuple[LiveGateway, str, int]]:
    """A gateway on Redis behind `slow_redis`, its user admitted once with room to spare (the
    next request may overlap its verdict): (gateway, token, user id)."""
    proxy, prefix = slow_redis, redis_prefix
    settings = make_settings(
        database_url,
        tmp_path,
        vllm_base_url=f"{simulator.url}/v1",
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        rate_limit_key_prefix=prefix,
        rate_limit_requests_per_minute=10,
        rate_limit_concurrent_streams=5,
    )
    await empty_tables(database_url, settings)
    await sim_post(simulator, "/sim/reset", {"config": True})
    async with LiveGateway(create_app(settings), free_port()) as gw:
        token = await _token(gw)
        user_id = await _user_id(gw)
        async with gw.client(token) as c:  # admitted with room to spare: the next may overlap
            assert (await c.post("/v1/chat/completions", json=_chat())).status_code == 200
        yield gw, token, user_id


async def _sim_requests(simulator: Any) -> int:
    return int((await sim_get(simulator, "/sim/stats"))["requests_total"])


async def _sent_while_the_verdict_is_held(
    c: httpx.AsyncClient, simulator: Any, slow_redis: TcpProxy, body: dict[str, Any]
) -> asyncio.Task[httpx.Response]:
    """Hold Redis's replies and post `body`: back once the model server has the request while
    its verdict is still held (the caller releases the replies)."""
    before = await _sim_requests(simulator)
    slow_redis.hold_replies()
    pending = asyncio.create_task(c.post("/v1/chat/completions", json=body))

    async def started_upstream() -> bool:
        return slow_redis.held > 0 and await _sim_requests(simulator) == before + 1

    await wait_until(started_upstream, timeout=5)
    return pending


async def _use_up_the_minute(prefix: str, user_id: int) -> None:
    """What other gateway processes would do meanwhile: the user's 10 requests are used."""
    redis = Redis.from_url(SHARED_REDIS)
    try:
        await redis.set(f"{prefix}:rpm:{user_id}", 10, keepttl=True)
    finally:
        await redis.aclose()


class TestVerdictOverlap:
    async def test_the_model_server_starts_while_the_verdict_is_on_its_way(  # type: ignore[no-untyped-def]
        self, overlap_gateway, simulator, slow_redis: TcpProxy
    ) -> None:
        gw, token, _ = overlap_gateway
        async with gw.client(token) as c:
            pending = await _sent_while_the_verdict_is_held(c, simulator, slow_redis, _chat())
            assert not pending.done()  # nothing answered before the verdict
            slow_redis.release_replies()
            r = await pending
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        assert r.headers["x-ratelimit-remaining"] == "8"

    @pytest.mark.parametrize("stream", [True, False])
    async def test_refused_by_the_verdict_is_a_plain_429_and_the_generation_is_cancelled(  # type: ignore[no-untyped-def]
        self,
        overlap_gateway,
        simulator,
        slow_redis: TcpProxy,
        redis_prefix: str,
        stream: bool,
    ) -> None:
        gw, token, user_id = overlap_gateway
        await _use_up_the_minute(redis_prefix, user_id)
        redis = Redis.from_url(SHARED_REDIS)
        try:
            stats = await sim_get(simulator, "/sim/stats")
            slow = {**_chat("long [[sim:tokens=200;itl_ms=20]]"), "stream": stream}
            async with gw.client(token) as c:
                pending = await _sent_while_the_verdict_is_held(c, simulator, slow_redis, slow)
                slow_redis.release_replies()
                r = await pending
            assert_error(r, 429, "rate_limited")
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert int(r.headers["retry-after"]) >= 1

            async def generation_cancelled() -> bool:
                now = await sim_get(simulator, "/sim/stats")
                return bool(
                    now["aborted_total"] == stats["aborted_total"] + 1
                    and now["active_requests"] == 0
                )

            await wait_until(generation_cancelled, timeout=5)
            assert int(await redis.get(f"{redis_prefix}:streams:{user_id}") or 0) == 0
            assert gw.app.state.rate_limiter._checking == {}
        finally:
            await redis.aclose()
        await gw.app.state.usage_recorder.flush()
        async with gw.app.state.session_factory() as session:
            codes = [r.status_code for r in (await session.execute(select(RequestLog))).scalars()]
        assert sorted(codes) == [200, 429]

    async def test_a_refusal_comes_before_a_bad_body(  # type: ignore[no-untyped-def]
        self, overlap_gateway, redis_prefix: str
    ) -> None:
        gw, token, user_id = overlap_gateway
        await _use_up_the_minute(redis_prefix, user_id)
        async with gw.client(token) as c:
            r = await c.post(
                "/v1/chat/completions",
                content=b'{"model": "current", "messages": [',
                headers={"content-type": "application/json"},
            )
        assert_error(r, 429, "rate_limited")

    async def test_a_client_gone_before_the_verdict_leaves_no_slot_behind(  # type: ignore[no-untyped-def]
        self, overlap_gateway, simulator, slow_redis: TcpProxy, redis_prefix: str
    ) -> None:
        gw, token, user_id = overlap_gateway
        before = await sim_get(simulator, "/sim/stats")
        slow = {**_chat("long [[sim:tokens=200;itl_ms=20]]"), "stream": True}
        async with gw.client(token) as c:
            pending = await _sent_while_the_verdict_is_held(c, simulator, slow_redis, slow)
            pending.cancel()  # the client hangs up
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        slow_redis.release_replies()
        redis = Redis.from_url(SHARED_REDIS)
        try:

            async def nothing_held() -> bool:
                sim = await sim_get(simulator, "/sim/stats")
                slots = int(await redis.get(f"{redis_prefix}:streams:{user_id}") or 0)
                return bool(
                    slots == 0
                    and sim["active_requests"] == 0
                    and sim["aborted_total"] == before["aborted_total"] + 1
                    and gw.app.state.rate_limiter._checking == {}
                )

            await wait_until(nothing_held, timeout=10)
        finally:
            await redis.aclose()
