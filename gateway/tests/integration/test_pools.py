"""A pool: one profile served by three real simulator processes (issue 15, item 3).

Load spreads over the instances; one killed under load costs no request that had not started
streaming (those are retried on another instance), is taken out, and takes requests again when
it comes back. The figures (split, failover time, requests affected) are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.main import create_app
from tests.conftest import LiveGateway, bearer, make_settings, wait_until
from tests.ports import free_port
from tests.sim_process import SimProcess, start_server

# ~0.5 s per answer: long enough that a kill finds answers in every phase
SIM_ARGS = ["--model", "sim-pool", "--ttft-ms", "60", "--itl-ms", "15", "--tokens", "30"]


def start_instance(log: Path, port: int) -> SimProcess:
    argv = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)]
    return start_server([*argv, *SIM_ARGS], port, log, deadline_s=30)


@dataclass
class Pool:
    sims: list[SimProcess]
    tmp: Path
    restarted: list[SimProcess] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"{s.url}/v1" for s in self.sims]

    def restart(self, i: int) -> SimProcess:
        sim = start_instance(self.tmp / f"sim{i}-again.log", self.sims[i].port)
        self.restarted.append(sim)
        return sim


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    sims: list[SimProcess] = []
    made = Pool(sims, tmp_path)
    try:
        for i in range(3):
            sims.append(start_instance(tmp_path / f"sim{i}.log", free_port()))
        yield made
    finally:
        for sim in [*sims, *made.restarted]:
            sim.stop()


@contextlib.asynccontextmanager
async def pool_gateway(
    tmp_path: Path,
    instances: list[str],
    health_interval_s: float = 0.5,
    wait_running: bool = True,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    profiles = {
        "profiles": {
            "sim-pool": {
                "name": "Simulator pool",
                "model_id": "sim-pool",
                "cpu_only": True,
                "runtime": "external",
                "instances": instances,
                "aliases": ["pooled"],
            }
        }
    }
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles))
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        tmp_path,
        model_profiles_path=path,
        model_default_profile="sim-pool",
        model_log_dir=tmp_path / "model-logs",
        title_generation=False,
        gpu_probe="none",
        rate_limit_enabled=False,
        upstream_health_interval_s=health_interval_s,
        upstream_retry_max_s=2,
        **overrides,
    )
    async with LiveGateway(create_app(settings), free_port()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            r = await client.post("/api/auth/login", json={"username": "test", "password": "test"})
            client.headers.update(bearer(r.json()["access_token"]))

            async def running() -> bool:
                s = (await client.get("/api/models/status")).json()
                return bool(s["status"] == "running")

            if wait_running:
                await wait_until(running, timeout=30)
            yield client


async def instances(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    s = (await client.get("/api/models/status")).json()
    return {i["base_url"]: i for i in s["instances"]}


async def retries(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/models/status")).json()["instance_retries"])


async def sim_requests(sim: SimProcess) -> int:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5) as c:
        return int((await c.get("/sim/stats")).json()["requests_total"])


async def chat(client: httpx.AsyncClient, path: str = "/v1/chat/completions") -> str:
    """One streamed answer: "ok", "failed_before_stream" (no 200 / nothing relayed) or
    "failed_mid_stream" (an error event after the stream had started)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    if path == "/v1/chat/completions":
        body["model"] = "pooled"
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return "failed_before_stream"
            done, error = False, False
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line:
                    error = True
            return "ok" if done and not error else "failed_mid_stream"
    except httpx.HTTPError:
        return "failed_before_stream"


async def test_load_spreads_over_the_instances(tmp_path: Path, pool: Pool) -> None:
    async with pool_gateway(tmp_path, pool.urls) as client:
        before = [await sim_requests(s) for s in pool.sims]
        sem = asyncio.Semaphore(9)

        async def one(i: int) -> str:
            async with sem:
                return await chat(client, "/api/chat" if i % 3 == 0 else "/v1/chat/completions")

        results = Counter(await asyncio.gather(*(one(i) for i in range(90))))
        assert results == {"ok": 90}, results
        split = [await sim_requests(s) - b for s, b in zip(pool.sims, before, strict=True)]
        print(f"\npool split over 3 instances, 90 requests at 9 concurrent: {split}")
        assert sum(split) == 90
        # least outstanding requests with round-robin ties: no instance is left out or flooded
        assert min(split) >= 18, split
        # answers read whole (stream: false) and embeddings take the same way
        for _ in range(3):
            body = {"model": "sim-pool", "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"]
        r = await client.post("/v1/embeddings", json={"model": "sim-pool", "input": "hi"})
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["embedding"]
        views = await instances(client)
        assert all(v["healthy"] and v["outstanding"] == 0 for v in views.values()), views


async def test_an_instance_killed_under_load(tmp_path: Path, pool: Pool) -> None:
    async with pool_gateway(tmp_path, pool.urls) as client:
        victim = pool.sims[1]
        victim_url = pool.urls[1]
        results: Counter[str] = Counter()
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                results[await chat(client)] += 1

        workers = [asyncio.create_task(worker()) for _ in range(12)]
        try:
            await wait_until(lambda: results["ok"] >= 30, timeout=60)

            async def victim_streaming() -> bool:  # kill it with answers under way on it
                async with httpx.AsyncClient(base_url=victim.url, timeout=5) as c:
                    return int((await c.get("/sim/stats")).json()["active_streams"]) >= 2

            await wait_until(victim_streaming, timeout=30, interval=0.01)
            before_kill = sum(results.values())
            victim.stop(signal.SIGKILL)
            killed_at = time.monotonic()

            async def taken_out() -> bool:
                return not (await instances(client))[victim_url]["healthy"]

            await wait_until(taken_out, timeout=10, interval=0.01)
            failover_s = time.monotonic() - killed_at
            # the load goes on over the two left
            after_out = sum(results.values())
            await wait_until(lambda: sum(results.values()) >= after_out + 40, timeout=60)

            # it comes back on the same port: probed with backoff, then takes requests again
            back = pool.restart(1)
            back_at = time.monotonic()

            async def returned() -> bool:
                return bool((await instances(client))[victim_url]["healthy"])

            await wait_until(returned, timeout=15, interval=0.05)
            return_s = time.monotonic() - back_at
            await wait_until(lambda: sim_requests(back), timeout=30)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        views = await instances(client)
        print(
            f"\nkill under load (12 concurrent streams): {dict(results)}; "
            f"{before_kill} answered before the kill; taken out {failover_s * 1000:.0f} ms "
            f"after SIGKILL; back {return_s * 1000:.0f} ms after restart; "
            f"served per instance {[v['served'] for v in views.values()]}; "
            f"retried on another instance: {await retries(client)}"
        )
        # every request that had not started streaming was answered (retried elsewhere)
        assert results["failed_before_stream"] == 0, results
        # at most the streams the dead instance was relaying at the kill broke
        assert results["failed_mid_stream"] <= 12, results
        assert failover_s < 5
        assert views[victim_url]["taken_out"] >= 1


async def test_a_frozen_instance_fails_its_probe_and_its_waiting_requests_move(
    tmp_path: Path, pool: Pool
) -> None:
    """SIGSTOP: the kernel still accepts connections, nothing answers. The probe takes it out;
    requests waiting for their first byte on it are sent to another instance at that moment."""
    # frozen longer than the first-token timeout: a request left waiting on it would be a 504
    overrides = {
        "health_probe_timeout_s": 1.0,
        "upstream_first_token_timeout_s": 4.0,
        "upstream_idle_timeout_s": 3.0,
    }
    async with pool_gateway(tmp_path, pool.urls, **overrides) as client:
        victim, victim_url = pool.sims[2], pool.urls[2]
        results: Counter[str] = Counter()
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                results[await chat(client)] += 1

        workers = [asyncio.create_task(worker()) for _ in range(9)]
        try:
            await wait_until(lambda: results["ok"] >= 20, timeout=60)
            victim.process.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()

            async def taken_out() -> bool:
                return not (await instances(client))[victim_url]["healthy"]

            await wait_until(taken_out, timeout=15, interval=0.02)
            out_s = time.monotonic() - frozen_at
            done = sum(results.values())
            await wait_until(lambda: sum(results.values()) >= done + 30, timeout=60)
            await wait_until(lambda: time.monotonic() - frozen_at > 5, timeout=10)
            victim.process.send_signal(signal.SIGCONT)

            async def returned() -> bool:
                return bool((await instances(client))[victim_url]["healthy"])

            await wait_until(returned, timeout=15, interval=0.05)
        finally:
            victim.process.send_signal(signal.SIGCONT)
            stop.set()
            await asyncio.gather(*workers)
        print(
            f"\nfrozen instance (SIGSTOP) under 9 concurrent streams: {dict(results)}; taken out "
            f"{out_s * 1000:.0f} ms after the freeze; retried: {await retries(client)}"
        )
        assert results["failed_before_stream"] == 0, results
        assert results["failed_mid_stream"] <= 9, results  # only what it was relaying
        assert out_s < 5


async def test_a_refusing_instance_is_taken_out_and_costs_nothing(
    tmp_path: Path, pool: Pool
) -> None:
    # no health probe before the requests: the requests themselves find the dead instance
    async with pool_gateway(tmp_path, pool.urls, health_interval_s=60) as client:
        assert (await instances(client))[pool.urls[0]]["healthy"]
        pool.sims[0].stop(signal.SIGKILL)
        dead = pool.urls[0]
        results = Counter(await asyncio.gather(*(chat(client) for _ in range(20))))
        assert results == {"ok": 20}, results
        assert await retries(client) >= 1  # a request sent to the dead one went elsewhere
        views = await instances(client)
        assert views[dead]["healthy"] is False
        assert views[dead]["last_error"] == "connection refused"
        assert views[dead]["outstanding"] == 0
        assert views[dead]["served"] == 0
        # /v1/models answers from a healthy instance whatever the first one does
        r = await client.get("/v1/models")
        assert [m["id"] for m in r.json()["data"]] == ["sim-pool"]
        health = (await client.get("/health")).json()
        assert health["services"]["vllm"]["status"] == "up", health
        assert health["services"]["vllm"]["healthy_instances"] == 2, health
        metrics = (await client.get("/metrics")).text
        assert f'gateway_upstream_instance_up{{instance="{dead}"}} 0.0' in metrics


async def test_an_instance_dead_from_the_start_fails_its_probe(tmp_path: Path, pool: Pool) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with pool_gateway(tmp_path, [dead, *pool.urls[:2]]) as client:

        async def out() -> bool:
            return not (await instances(client))[dead]["healthy"]

        await wait_until(out, timeout=10)
        results = Counter(await asyncio.gather(*(chat(client) for _ in range(10))))
        assert results == {"ok": 10}, results
        assert (await instances(client))[dead]["served"] == 0


async def test_every_instance_down_is_a_503_with_retry_after(tmp_path: Path, pool: Pool) -> None:
    async with pool_gateway(tmp_path, pool.urls[:2]) as client:
        assert await chat(client) == "ok"
        for sim in pool.sims[:2]:
            sim.stop(signal.SIGKILL)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert r.json()["error"]["code"] == "model_unavailable"
        r = await client.post("/api/chat", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_unavailable"


async def test_a_pool_down_at_start_is_running_once_its_instances_answer(tmp_path: Path) -> None:
    """Every instance down when the gateway starts (a Kubernetes vLLM Deployment still
    pulling its image): the start ends in `error` after the ready timeout, and once the
    instances answer the status comes back to `running` by itself (it stayed `error` for
    ever, though chat was answered, with MODEL_RUNTIME=external no switch could clear it)."""
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    sims: list[SimProcess] = []
    try:
        async with pool_gateway(
            tmp_path, urls, wait_running=False, model_ready_timeout_s=1.5
        ) as client:

            async def status() -> dict[str, Any]:
                body: dict[str, Any] = (await client.get("/api/models/status")).json()
                return body

            await wait_until(lambda: _is(status, "error"), timeout=30)
            r = await client.post(
                "/v1/chat/completions",
                json={"model": "pooled", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            sims = [start_instance(tmp_path / f"late{i}.log", p) for i, p in enumerate(ports)]
            await wait_until(lambda: _is(status, "running"), timeout=45, interval=0.2)
            s = await status()
            assert s["current_profile"] == "sim-pool" and s["error"] is None, s
            assert await chat(client) == "ok"
    finally:
        for sim in sims:
            sim.stop()


async def _is(status: Any, wanted: str) -> bool:
    return bool((await status())["status"] == wanted)
