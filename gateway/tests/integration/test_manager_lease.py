"""One model manager for many gateway processes (issue 15): real `app.cli serve` processes on
one Postgres and one Redis, the simulator as the managed model server (process runtime).

A switch asked of any process is carried out once (the profiles' commands count their starts
in a file); chat through every process during it completes or gets 503 + Retry-After; killing
the acting process mid-switch hands the lease to another, which finishes the switch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.core.errors import NotFound
from tests.conftest import (
    GATEWAY_DIR,
    SHARED_REDIS,
    assert_error,
    bearer,
    create_pg_database,
    drop_pg_database,
    gateway_env,
    require_postgres,
    wait_live,
    wait_until,
)
from tests.integration.test_model_switching import PROFILES, chat_once
from tests.ports import free_port

# every start of a profile's server appends its profile id to a file, then becomes the server
COUNT = "import os,sys; f=open(sys.argv[1],'a'); f.write(sys.argv[2]+chr(10)); f.close(); os.execv(sys.argv[3], sys.argv[3:])"  # noqa: E501


def counted(profiles: dict[str, Any], count_file: Path) -> dict[str, Any]:
    out = {}
    for pid, profile in profiles.items():
        profile = dict(profile)
        if "command" in profile:
            profile["command"] = [
                "{python}", "-c", COUNT, str(count_file), pid, *profile["command"]
            ]  # fmt: skip
        out[pid] = profile
    return out


class Cluster:
    """Gateway processes sharing a database, a Redis prefix, the profiles and the model log
    directory (where the process runtime's pid file lets a new lease holder adopt)."""

    def __init__(self, tmp_path: Path, store: str, database_url: str, prefix: str) -> None:
        self.tmp = tmp_path
        self.count_file = tmp_path / "starts.txt"
        self.log_dir = tmp_path / "model-logs"
        profiles = counted(PROFILES, self.count_file)
        profiles["slow-start"]["command"] = [
            *profiles["slow-start"]["command"][:-1],
            "4",
        ]  # loads for 4 s: long enough to kill the acting process mid-switch
        path = tmp_path / "profiles.yaml"
        path.write_text(yaml.safe_dump({"profiles": profiles}))
        where = (
            {"SQLITE_PATH": str(tmp_path / "shared.db")}
            if store == "sqlite"
            else {"DATABASE_URL": database_url}
        )
        if store == "redis":
            where["REDIS_URL"] = SHARED_REDIS
        self.store = store
        self.env = gateway_env(
            **where,
            JWT_SECRET="cluster-secret-" + "c" * 40,
            RATE_LIMIT_KEY_PREFIX=prefix,
            RATE_LIMIT_ENABLED="false",
            VLLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
            MODEL_PROFILES_PATH=str(path),
            MODEL_DEFAULT_PROFILE="simulator",
            MODEL_LOG_DIR=str(self.log_dir),
            MODEL_STOP_TIMEOUT_S="5",
            MANAGER_LEASE_TTL_S="2",
            GPU_PROBE="none",
            TITLE_GENERATION="false",
            PYTHONUNBUFFERED="1",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []
        self.admin: dict[str, str] = {}
        self.user: dict[str, str] = {}

    async def spawn(self, workers: int = 1) -> str:
        port = free_port()
        log = self.tmp / f"gw{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                 "--workers", str(workers)],
                cwd=GATEWAY_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        self.procs.append(proc)
        self.urls.append(url)
        self.logs.append(log)
        await wait_live(url, proc, log)
        return url

    async def login(self) -> None:
        async with httpx.AsyncClient(base_url=self.urls[0], timeout=30) as c:
            for name, password, attr in (("admin", "admin123", "admin"), ("test", "test", "user")):
                r = await c.post("/api/auth/login", json={"username": name, "password": password})
                assert r.status_code == 200, r.text
                setattr(self, attr, bearer(r.json()["access_token"]))

    async def status(self, url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            r = await c.get("/api/models/status", headers=self.user)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def switch(self, url: str, profile_id: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return await c.post(
                "/api/models/switch", json={"profile_id": profile_id}, headers=self.admin
            )

    def live_urls(self) -> list[str]:
        return [u for u, p in zip(self.urls, self.procs, strict=True) if p.poll() is None]

    async def all_running(self, profile: str, timeout: float = 40) -> list[dict[str, Any]]:
        """Every live process reports `profile` running, no operation in progress, one leader."""

        async def ok() -> list[dict[str, Any]] | None:
            statuses = [await self.status(u) for u in self.live_urls()]
            leaders = {s["manager"]["leader"] for s in statuses}
            good = all(
                s["status"] == "running"
                and s["current_profile"] == profile
                and (s["switch"] is None or s["switch"]["finished_at"])
                for s in statuses
            )
            return statuses if good and len(leaders) == 1 and None not in leaders else None

        try:
            result: list[dict[str, Any]] = await wait_until(ok, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(await self.diagnosis()) from None
        return result

    async def acting_url(self) -> str:
        for url in self.live_urls():
            s = await self.status(url)
            if s["acting"]:
                return url
        raise AssertionError("no process is acting")

    def starts(self) -> Counter[str]:
        if not self.count_file.exists():
            return Counter()
        return Counter(self.count_file.read_text().split())

    async def diagnosis(self) -> str:
        parts = []
        for url in self.live_urls():
            with contextlib.suppress(Exception):
                s = await self.status(url)
                s.pop("available_profiles", None)
                s.pop("hardware_info", None)
                parts.append(f"{url}: {json.dumps(s)[:1500]}")
        for log in self.logs:
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-25:]))
        parts.append(f"starts: {self.starts()}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # a model server left by a killed gateway: its pid file names it
        pid_file = self.log_dir / "model-server.pid"
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@pytest.fixture(params=["redis", "postgres", "sqlite"])
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Cluster]:
    """The lease and the shared state in Redis (with Postgres), in Postgres alone, or in the
    SQLite file the processes share."""
    store: str = request.param
    url = ""
    if store != "sqlite":
        require_postgres()
        url = await create_pg_database("gw_lease")
    c = Cluster(tmp_path, store, url, redis_prefix)
    try:
        yield c
    finally:
        c.close()
        if url:
            await drop_pg_database(url)


async def chat_loop(url: str, headers: dict[str, str], stop: asyncio.Event, out: list[Any]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        while not stop.is_set():
            out.append((url, *(await chat_once(c, headers))))


@pytest.mark.parametrize("n", [2, 3])
async def test_a_switch_asked_of_a_follower_happens_once(cluster: Cluster, n: int) -> None:
    for _ in range(n):  # one after the other: the first migrates the database
        await cluster.spawn()
    await cluster.login()
    first = await cluster.all_running("simulator")
    nodes = {s["manager"]["node"] for s in first}
    assert len(nodes) == n
    assert sum(s["acting"] for s in first) == 1
    assert cluster.starts() == Counter({"simulator": 1})
    acting = await cluster.acting_url()
    followers = [u for u in cluster.urls if u != acting]

    # the same answers as one process gives, from a follower
    assert_error(await cluster.switch(followers[0], "nonexistent"), 404, "profile_not_found")
    assert_error(await cluster.switch(followers[0], "gpu-big"), 422, "incompatible_hardware")

    outcomes: list[Any] = []
    stop = asyncio.Event()
    users = [
        asyncio.create_task(chat_loop(u, cluster.user, stop, outcomes))
        for u in cluster.urls
        for _ in range(3)
    ]
    await wait_until(lambda: len(outcomes) >= 6 * n, timeout=30)
    r = await cluster.switch(followers[0], "simulator-alt")
    assert r.status_code == 202, r.text
    assert r.json()["target"] == "simulator-alt" and r.json()["previous"] == "simulator"
    # a second switch, asked of any other process meanwhile, is refused by the acting one
    r2 = await cluster.switch(followers[-1] if n > 2 else acting, "slow-start")
    assert_error(r2, 409, "switch_in_progress")
    statuses = await cluster.all_running("simulator-alt")
    after = len(outcomes)
    await wait_until(lambda: len(outcomes) >= after + 6 * n, timeout=30)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*users), 90)

    assert cluster.starts() == Counter({"simulator": 1, "simulator-alt": 1})
    for s in statuses:
        assert s["served_model"] == "sim-b"
        assert s["history"][0]["outcome"] == "success"
    kinds = Counter(kind for _, kind, _ in outcomes)
    assert set(kinds) <= {"ok", "503"}, [o for o in outcomes if o[1] not in ("ok", "503")][:3]
    for _, kind, detail in outcomes:
        if kind == "503":
            assert detail[0] is not None, detail  # Retry-After
    per_process = Counter(url for url, kind, _ in outcomes if kind == "ok")
    assert set(per_process) == set(cluster.urls)  # every process served chat
    models = Counter(detail for _, kind, detail in outcomes if kind == "ok")
    assert set(models) == {"sim-a", "sim-b"}
    print(f"\n{cluster.store}, {n} processes: {dict(kinds)}, per model {dict(models)}")


async def test_killing_the_acting_process_mid_switch(cluster: Cluster) -> None:
    for _ in range(3):
        await cluster.spawn()
    await cluster.login()
    await cluster.all_running("simulator")
    acting = await cluster.acting_url()
    old_leader = (await cluster.status(acting))["manager"]["node"]
    follower = next(u for u in cluster.urls if u != acting)
    r = await cluster.switch(follower, "slow-start")
    assert r.status_code == 202, r.text

    async def loading() -> bool:
        sw = (await cluster.status(follower))["switch"]
        return bool(sw and sw["target"] == "slow-start" and sw["phase"] == "loading")

    await wait_until(loading, timeout=20, interval=0.05)
    victim = cluster.procs[cluster.urls.index(acting)]
    victim.kill()
    killed = time.monotonic()
    victim.wait(timeout=10)

    async def new_leader() -> str | None:
        for url in cluster.live_urls():
            s = await cluster.status(url)
            if s["acting"] and s["manager"]["node"] != old_leader:
                return url
        return None

    await wait_until(new_leader, timeout=20, interval=0.05)
    takeover_s = time.monotonic() - killed

    # chat through the survivors meanwhile: completes or 503 + Retry-After, never hangs
    outcomes: list[Any] = []
    stop = asyncio.Event()
    users = [asyncio.create_task(chat_loop(u, cluster.user, stop, outcomes))
             for u in cluster.live_urls()]  # fmt: skip
    statuses = await cluster.all_running("slow-start", timeout=60)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*users), 90)
    assert {kind for _, kind, _ in outcomes} <= {"ok", "503"}, outcomes[:3]
    entry = statuses[0]["history"][0]
    assert entry["to_profile"] == "slow-start" and entry["outcome"] == "success", entry
    # the server the dead process started was adopted, not started again
    assert cluster.starts() == Counter({"simulator": 1, "slow-start": 1}), cluster.starts()
    print(f"\n{cluster.store}: leader takeover after SIGKILL: {takeover_s:.2f}s (lease TTL 2 s)")
    assert takeover_s < 2 + 2 + 1  # TTL, a renewal period, and this machine's slack


async def test_workers_share_one_manager(cluster: Cluster) -> None:
    """`app.cli serve --workers 3` with a managed profile: one start per profile, switches
    answered by whichever worker takes the request."""
    url = await cluster.spawn(workers=3)
    await cluster.login()

    async def everyone_running(profile: str) -> bool:
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(12):  # the kernel spreads connections over the workers
            s = await cluster.status(url)
            seen[s["manager"]["node"]] = s
        return len(seen) >= 2 and all(
            s["status"] == "running" and s["current_profile"] == profile for s in seen.values()
        )

    await wait_until(lambda: everyone_running("simulator"), timeout=60, interval=0.2)
    r = await cluster.switch(url, "simulator-alt")
    assert r.status_code == 202, r.text
    await wait_until(lambda: everyone_running("simulator-alt"), timeout=60, interval=0.2)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        results = [await chat_once(c, cluster.user) for _ in range(6)]
    assert all(kind == "ok" and model == "sim-b" for kind, model in results), results
    assert cluster.starts() == Counter({"simulator": 1, "simulator-alt": 1})


# --- the lease itself, in one process: two coordinators on one store ---------------------------


@pytest.fixture(params=["redis", "postgres", "sqlite"])
async def lease_pair(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[tuple[Any, Any]]:
    """Two managers (no default profile, a fake runtime) on one lease store, lease TTL 1 s."""
    from app.db.engine import create_engine
    from app.db.migrate import migrate
    from app.model_manager.coordination import DatabaseCoordinator, RedisCoordinator
    from app.model_manager.manager import ModelManager
    from app.model_manager.profiles import RuntimeKind
    from tests.unit.model_manager.fakes import FakeRuntime, FakeUpstream, fake_settings

    store: str = request.param
    url = ""
    if store == "postgres":
        require_postgres()
        url = await create_pg_database("gw_lease")
    settings = fake_settings(
        tmp_path,
        model_default_profile=None,
        database_url=url or f"sqlite+aiosqlite:///{tmp_path}/lease.db",
    )
    engine = create_engine(settings)
    await migrate(engine)
    managers = []
    for _ in range(2):
        coordinator = (
            RedisCoordinator(SHARED_REDIS, redis_prefix, lease_ttl_s=1.0, forward_timeout_s=3)
            if store == "redis"
            else DatabaseCoordinator(engine, lease_ttl_s=1.0, forward_timeout_s=3)
        )
        runtime = FakeRuntime()
        upstream: Any = FakeUpstream(runtime, settings.vllm_base_url)
        manager = ModelManager(settings, upstream, coordinator)
        manager._runtimes[RuntimeKind.PROCESS] = runtime
        managers.append(manager)
    try:
        await managers[0].start()
        await wait_until(lambda: managers[0].acting, timeout=10)
        await managers[1].start()
        yield managers[0], managers[1]
    finally:
        for m in managers:
            await m.stop()
        await engine.dispose()
        if url:
            await drop_pg_database(url)


async def test_the_lease_fences_off_a_holder_that_stalls(lease_pair: tuple[Any, Any]) -> None:
    """The holder stops renewing (a stalled process): within the TTL it stops counting itself
    acting, the other takes the lease with a larger fence, and the old holder's state writes
    are refused; the follower forwards switches to the new holder and shows its state."""
    one, two = lease_pair
    c1, c2 = one.coordinator, two.coordinator
    await wait_until(lambda: c2.leader == c1.node_id, timeout=10)
    assert not two.acting
    old_value, old_fence = c1.lease_value, c1.fence
    c1._tasks[0].cancel()  # the lease loop: no more renewals
    stalled = time.monotonic()
    await wait_until(lambda: two.acting, timeout=10, interval=0.02)
    assert time.monotonic() - stalled < 1.0 + 1.0  # TTL + slack
    assert not one.acting
    assert c2.fence > old_fence
    assert not await c1._write_state(old_value, json.dumps({"status": "error"}))
    # what its lease loop would have done next: it follows now, and forwards switches
    await c1._lose("stalled")
    with pytest.raises(NotFound):
        await one.request_switch("nonexistent")
    record = await one.request_switch("b")
    assert record.target == "b"
    await wait_until(lambda: two.status.value == "running" and two.current_profile == "b", 10)
    await wait_until(lambda: one.current_profile == "b" and one.gate.is_open, timeout=10)


async def test_a_reload_on_any_process_reaches_every_process(cluster: Cluster) -> None:
    """A profile added to the file and reloaded through a follower is known to every process
    (listed, switchable from another follower); a broken file is refused there, as before."""
    for _ in range(3):
        await cluster.spawn()
    await cluster.login()
    await cluster.all_running("simulator")
    acting = await cluster.acting_url()
    followers = [u for u in cluster.urls if u != acting]
    path = Path(cluster.env["MODEL_PROFILES_PATH"])
    profiles = yaml.safe_load(path.read_text())
    profiles["profiles"]["simulator-new"] = {
        **profiles["profiles"]["simulator"],
        "name": "Added later",
        "model_id": "sim-new",
    }
    path.write_text(yaml.safe_dump(profiles))
    async with httpx.AsyncClient(base_url=followers[0], timeout=30) as c:
        r = await c.post("/api/models/reload", headers=cluster.admin)
    assert r.status_code == 200, r.text
    assert "simulator-new" in r.json()["profiles"]

    async def everywhere() -> bool:
        for url in cluster.urls:
            async with httpx.AsyncClient(base_url=url, timeout=10) as c:
                r = await c.get("/api/models/profiles", headers=cluster.user)
            if "simulator-new" not in r.json()["profiles"]:
                return False
        return True

    await wait_until(everywhere, timeout=15, interval=0.1)
    r = await cluster.switch(followers[1], "simulator-new")
    assert r.status_code == 202, r.text
    statuses = await cluster.all_running("simulator-new")
    assert all(s["served_model"] == "sim-new" for s in statuses)
    path.write_text("profiles: [not, a, mapping]\n")
    async with httpx.AsyncClient(base_url=followers[0], timeout=30) as c:
        r = await c.post("/api/models/reload", headers=cluster.admin)
    assert_error(r, 422, "invalid_profiles")
