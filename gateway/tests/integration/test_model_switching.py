"""The model manager with the process runtime: real simulator processes started, switched,
rolled back, restarted and adopted by a real gateway (uvicorn on a port, in the test's loop)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.core.config import GATEWAY_DIR
from app.main import create_app
from tests.conftest import (
    LiveGateway,
    assert_error,
    bearer,
    make_settings,
    wait_until,
)
from tests.ports import free_port
from tests.sim_process import SIM_COMMAND

SIM = [*SIM_COMMAND, "--max-model-len", "{max_model_len}"]
SWITCHES_OK = 'gateway_model_switches_total{outcome="success"}'
RESTARTS = "gateway_model_server_restarts_total"
PROFILES: dict[str, Any] = {
    "simulator": {
        "name": "Simulator A",
        "model_id": "sim-a",
        "cpu_only": True,
        "runtime": "process",
        "command": [*SIM, "--ttft-ms", "20", "--itl-ms", "10", "--tokens", "20"],
        "ready_timeout_s": 20,
    },
    "simulator-alt": {
        "name": "Simulator B",
        "model_id": "sim-b",
        "cpu_only": True,
        "runtime": "process",
        "command": [
            *SIM,
            "--ttft-ms",
            "20",
            "--itl-ms",
            "10",
            "--tokens",
            "20",
            "--startup-delay-s",
            "0.5",
        ],
        "ready_timeout_s": 20,
    },
    "slow-start": {
        "name": "Slow to load",
        "model_id": "sim-slow",
        "cpu_only": True,
        "runtime": "process",
        "command": [*SIM, "--startup-delay-s", "3"],
        "ready_timeout_s": 20,
    },
    "never-ready": {
        "name": "Never ready",
        "model_id": "sim-never",
        "cpu_only": True,
        "runtime": "process",
        "command": [
            "{python}",
            "-c",
            "import time; print('loading weights', flush=True); time.sleep(120)",
        ],
        "ready_timeout_s": 2,
    },
    "crash-oom": {
        "name": "Crashes at start",
        "model_id": "sim-oom",
        "cpu_only": True,
        "runtime": "process",
        "command": [
            "{python}",
            "-c",
            "print('torch.OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 2.00 GiB'); raise SystemExit(1)",
        ],
        "ready_timeout_s": 20,
    },
    "gpu-big": {
        "name": "Needs two GPUs",
        "model_id": "org/big",
        "tensor_parallel_size": 2,
        "hardware_requirements": {"min_vram_gb": 40, "min_gpus": 2},
    },
}


class Managed:
    def __init__(self, gateway: LiveGateway, log_dir: Path, profiles_path: Path) -> None:
        self.gateway = gateway
        self.url = gateway.url
        self.log_dir = log_dir
        self.profiles_path = profiles_path
        self.client = httpx.AsyncClient(base_url=gateway.url, timeout=30)
        self.admin: dict[str, str] = {}
        self.user: dict[str, str] = {}

    async def login(self) -> None:
        for name, password, attr in (("admin", "admin123", "admin"), ("test", "test", "user")):
            r = await self.client.post(
                "/api/auth/login", json={"username": name, "password": password}
            )
            setattr(self, attr, bearer(r.json()["access_token"]))

    async def status(self) -> dict[str, Any]:
        r = await self.client.get("/api/models/status", headers=self.user)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def switch(self, profile_id: str) -> httpx.Response:
        return await self.client.post(
            "/api/models/switch", json={"profile_id": profile_id}, headers=self.admin
        )

    async def switch_done(self, timeout: float = 30) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            s = await self.status()
            sw = s["switch"]
            return s if sw and sw["finished_at"] and s["status"] != "switching" else None

        return await self.wait_for(done, timeout)

    async def wait_for(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """wait_until, and on a timeout the manager's status and the model servers' logs."""
        try:
            result: dict[str, Any] = await wait_until(predicate, timeout=timeout, interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await self.diagnosis()}") from None
        return result

    async def diagnosis(self) -> str:
        """What a failed assertion should show: the status and the tail of every server log."""
        parts = [f"status: {await self.status()}"]
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    async def metric(self, sample: str) -> float:
        """One sample of /metrics (0 when absent). The registry is this test process's, shared
        with every in-process gateway before this one, so tests compare before and after."""
        for line in (await self.client.get("/metrics")).text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def server_pid(self) -> int:
        return int((self.log_dir / "model-server.pid").read_text().split()[0])


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def managed_gateway(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Managed]]:
    @contextlib.asynccontextmanager
    async def start(
        default: str | None = "simulator",
        profiles: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Managed]:
        profiles_path = tmp_path / "profiles.yaml"
        profiles_path.write_text(yaml.safe_dump({"profiles": profiles or PROFILES}))
        log_dir = tmp_path / "model-logs"
        values: dict[str, Any] = {
            "vllm_base_url": f"http://127.0.0.1:{free_port()}/v1",
            "model_profiles_path": profiles_path,
            "model_default_profile": default,
            "model_log_dir": log_dir,
            "model_stop_timeout_s": 5,
            "title_generation": False,
            "gpu_probe": "none",
            "rate_limit_enabled": False,
        }
        values.update(overrides)
        settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/gw.db", tmp_path, **values)
        async with LiveGateway(create_app(settings), free_port()) as gateway:
            managed = Managed(gateway, log_dir, profiles_path)
            await managed.login()
            try:
                yield managed
            finally:
                await managed.client.aclose()

    return start


async def running(m: Managed, profile: str, timeout: float = 20) -> dict[str, Any]:
    async def ok() -> dict[str, Any] | None:
        s = await m.status()
        return s if s["status"] == "running" and s["current_profile"] == profile else None

    return await m.wait_for(ok, timeout)


async def chat_once(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, Any]:
    """One streamed /v1 chat: ("ok", model) when it completed, ("503", headers) or ("other", x)."""
    body = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code == 503:
                payload = (await r.aread()).decode()
                return "503", (r.headers.get("retry-after"), payload)
            if r.status_code != 200:
                return "other", (r.status_code, (await r.aread()).decode())
            models, done, errors = set(), False, []
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    event = __import__("json").loads(line[6:])
                    if "error" in event:
                        errors.append(event)
                    else:
                        models.add(event["model"])
            if done and not errors and len(models) == 1:
                return "ok", models.pop()
            return "other", (models, done, errors)
    except httpx.HTTPError as exc:
        return "other", repr(exc)


class TestStartAndStatus:
    async def test_default_profile_started_and_reported(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            status = await running(m, "simulator")
            assert status["runtime"] == "process"
            assert status["served_model"] == "sim-a"
            assert status["upstream_version"]
            assert status["hardware_info"]["gpu_count"] == 0
            profiles = status["available_profiles"]
            assert profiles["simulator"]["compatible"] is True
            assert profiles["gpu-big"]["compatible"] is False
            assert profiles["gpu-big"]["incompatible_reasons"][0].startswith("needs 2 GPUs")
            assert profiles["gpu-big"]["incompatible_details"][0]["code"] == "not_enough_gpus"
            r = await m.client.get("/api/models/profiles", headers=m.user)
            assert r.json()["current_profile"] == "simulator"
            assert set(r.json()["profiles"]) == set(PROFILES)
            r = await m.client.get("/api/models/hardware-recommendations", headers=m.user)
            rec = r.json()
            assert rec["incompatible_profiles"] == ["gpu-big"]
            assert "simulator" in rec["recommended_profiles"]
            r = await m.client.get("/api/models", headers=m.user)
            assert [x["id"] for x in r.json()["models"]] == ["sim-a"]
            health = (await m.client.get("/health")).json()
            assert health["services"]["vllm"]["status"] == "up"
            pid = m.server_pid()
        assert await wait_until(lambda: pid_gone(pid), timeout=10)  # stopped with the gateway

    async def test_reading_needs_a_token_and_switching_an_admin(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            for path in ("/status", "/profiles", "/hardware-recommendations"):
                assert_error(await m.client.get(f"/api/models{path}"), 401)
            r = await m.client.post(
                "/api/models/switch", json={"profile_id": "simulator-alt"}, headers=m.user
            )
            assert_error(r, 403, "forbidden")
            assert_error(await m.client.post("/api/models/reload", headers=m.user), 403)

    async def test_bad_switch_requests(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            assert_error(await m.switch("nonexistent-model"), 404, "profile_not_found")
            err = assert_error(await m.switch("gpu-big"), 422, "incompatible_hardware")
            assert err["reasons"] == [
                "needs 2 GPUs (tensor parallel 2), found 0",
                "needs 40 GB of GPU memory, the GPUs it would use have 0.0 GB",
            ]
            assert err["details"] == [
                {"code": "not_enough_gpus", "needed": 2, "tensor_parallel": 2, "found": 0},
                {"code": "not_enough_vram", "needed_gb": 40, "available_gb": 0.0},
            ]
            for body in ({}, {"profile_id": 5}, {"profile_id": ""}, {"profile": "x"}):
                r = await m.client.post("/api/models/switch", json=body, headers=m.admin)
                assert_error(r, 422)
            r = await m.client.post(
                "/api/models/switch",
                content=b"{not json",
                headers={**m.admin, "Content-Type": "application/json"},
            )
            assert_error(r, 422, "invalid_json")
            assert (await m.status())["current_profile"] == "simulator"  # nothing changed


class TestSwitch:
    async def test_switch_while_chat_load_runs(self, managed_gateway: Any) -> None:
        """Every request completes on the old or the new model; none hangs or fails."""
        async with managed_gateway() as m:
            await running(m, "simulator")
            switches_before = await m.metric(SWITCHES_OK)
            old_pid = m.server_pid()
            outcomes: list[tuple[str, Any]] = []
            stop = asyncio.Event()
            latencies: list[float] = []

            async def user_loop() -> None:
                async with httpx.AsyncClient(base_url=m.url, timeout=60) as c:
                    while not stop.is_set():
                        started = time.monotonic()
                        outcomes.append(await chat_once(c, m.user))
                        latencies.append(time.monotonic() - started)

            users = [asyncio.create_task(user_loop()) for _ in range(8)]
            await wait_until(lambda: len(outcomes) >= 16, timeout=20)
            r = await m.switch("simulator-alt")
            assert r.status_code == 202, r.text
            assert r.json() == {
                "success": True,
                "message": r.json()["message"],
                "status": "switching",
                "target": "simulator-alt",
                "previous": "simulator",
            }
            status = await m.switch_done()
            after_switch = len(outcomes)
            await wait_until(lambda: len(outcomes) >= after_switch + 16, timeout=20)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*users), 60)

            kinds = Counter(kind for kind, _ in outcomes)
            assert set(kinds) == {"ok"}, ([o for o in outcomes if o[0] != "ok"][:3], status)
            models = Counter(model for _, model in outcomes)
            assert set(models) == {"sim-a", "sim-b"}, await m.diagnosis()
            assert status["status"] == "running", await m.diagnosis()
            assert status["current_profile"] == "simulator-alt"
            assert status["served_model"] == "sim-b"
            phases = [p["phase"] for p in status["switch"]["phases"]]
            assert phases == ["stopping", "starting", "loading", "running"]
            (entry,) = status["history"]
            assert entry["outcome"] == "success" and entry["to_profile"] == "simulator-alt"
            assert 0.5 <= entry["duration_s"] < 15  # the new server takes 0.5 s to load
            assert pid_gone(old_pid)
            assert m.server_pid() != old_pid
            print(
                f"\nprocess-runtime switch: {entry['duration_s']:.2f}s (drain {entry['drain_s']}s),"
                f" {len(outcomes)} requests, slowest {max(latencies):.2f}s"
            )
            assert await m.metric(SWITCHES_OK) == switches_before + 1

    async def test_requests_past_switch_wait_get_503_with_retry_after(
        self, managed_gateway: Any
    ) -> None:
        async with managed_gateway(switch_wait_s=0.3) as m:
            await running(m, "simulator")
            assert (await m.switch("slow-start")).status_code == 202
            kind, detail = await chat_once(m.client, m.user)
            assert kind == "503", detail
            retry_after, body = detail
            assert retry_after == "10"
            assert '"code":"model_switching"' in body
            r = await m.client.post(
                "/api/chat",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers=m.user,
            )
            assert_error(r, 503, "model_switching")
            status = await m.switch_done()
            assert status["current_profile"] == "slow-start"
            assert (await chat_once(m.client, m.user)) == ("ok", "sim-slow")
            usage = (await m.client.get("/api/usage", headers=m.user)).json()
            assert usage  # the refused requests were recorded too (checked in detail below)

    async def test_two_switches_at_once_one_wins(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            first, second = await asyncio.gather(m.switch("simulator-alt"), m.switch("slow-start"))
            assert sorted([first.status_code, second.status_code]) == [202, 409]
            loser = first if first.status_code == 409 else second
            assert_error(loser, 409, "switch_in_progress")
            status = await m.switch_done()
            assert status["status"] == "running"
            assert len(status["history"]) == 1

    async def test_switch_back_and_forth(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            for target, model in (("simulator-alt", "sim-b"), ("simulator", "sim-a")):
                assert (await m.switch(target)).status_code == 202
                assert (await m.switch_done())["current_profile"] == target
                assert (await chat_once(m.client, m.user)) == ("ok", model)

            # each usage row names the profile that served it (the CSV's `profile` column)
            async def rows() -> list[dict[str, str]] | None:
                r = await m.client.get("/api/usage/export.csv", headers=m.user)
                found = list(csv.DictReader(io.StringIO(r.text)))
                return found if len(found) >= 2 else None

            exported = await wait_until(rows, timeout=10)
            served = [(row["model"], row["profile"]) for row in exported if row["model"]]
            assert ("sim-b", "simulator-alt") in served and ("sim-a", "simulator") in served


class TestFailures:
    async def test_server_never_ready_rolls_back(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            assert (await m.switch("never-ready")).status_code == 202
            status = await m.switch_done()
            assert status["status"] == "running"
            assert status["current_profile"] == "simulator"
            assert status["switch"]["phase"] == "failed"
            phases = [p["phase"] for p in status["switch"]["phases"]]
            assert phases == ["stopping", "starting", "loading", "rolling_back",
                              "starting", "loading", "failed"]  # fmt: skip
            assert "did not become ready within 2s" in status["error"]
            assert "rolled back to 'simulator'" in status["error"]
            assert "loading weights" in "\n".join(status["log_tail"])
            assert status["history"][0]["outcome"] == "rolled_back"
            assert (await chat_once(m.client, m.user)) == ("ok", "sim-a")

    async def test_crash_at_start_shows_log_and_hint(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            assert (await m.switch("crash-oom")).status_code == 202
            status = await m.switch_done()
            assert status["current_profile"] == "simulator"
            assert "the server stopped while loading: exited with code 1" in status["error"]
            assert any("CUDA out of memory" in line for line in status["log_tail"])
            assert "gpu_memory_utilization" in status["hint"]

    async def test_failed_first_start_is_an_error_not_a_hang(self, managed_gateway: Any) -> None:
        async with managed_gateway(default="crash-oom") as m:

            async def errored() -> dict[str, Any] | None:
                s = await m.status()
                return s if s["status"] == "error" else None

            status = await wait_until(errored, timeout=20)
            assert "exited with code 1" in status["error"]
            assert "gpu_memory_utilization" in status["hint"]
            started = time.monotonic()
            kind, detail = await chat_once(m.client, m.user)
            assert kind == "503" and "model_unavailable" in detail[1]
            assert time.monotonic() - started < 10
            # an admin can recover by switching to a working profile
            assert (await m.switch("simulator")).status_code == 202
            assert (await m.switch_done())["status"] == "running"

    async def test_unexpected_exit_is_restarted(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            restarts_before = await m.metric(RESTARTS)
            pid = m.server_pid()
            os.killpg(pid, signal.SIGKILL)

            async def restarted() -> dict[str, Any] | None:
                s = await m.status()
                ok = s["restarts"] == 1 and s["status"] == "running" and m.server_pid() != pid
                return s if ok else None

            await m.wait_for(restarted, timeout=20)
            assert (await chat_once(m.client, m.user)) == ("ok", "sim-a")
            assert await m.metric(RESTARTS) == restarts_before + 1


class TestReloadAndAdoption:
    async def test_reload(self, managed_gateway: Any) -> None:
        async with managed_gateway() as m:
            await running(m, "simulator")
            m.profiles_path.write_text("profiles:\n  simulator: {name: broken\n")
            err = assert_error(
                await m.client.post("/api/models/reload", headers=m.admin), 422, "invalid_profiles"
            )
            assert "not valid YAML" in err["message"] and "the old ones stay" in err["message"]
            assert set((await m.status())["available_profiles"]) == set(PROFILES)

            without_running = {k: v for k, v in PROFILES.items() if k != "simulator"}
            m.profiles_path.write_text(yaml.safe_dump({"profiles": without_running}))
            err = assert_error(
                await m.client.post("/api/models/reload", headers=m.admin), 422, "invalid_profiles"
            )
            assert "running profile 'simulator' is missing" in err["message"]

            extra = {**PROFILES, "another": {**PROFILES["simulator"], "name": "Another"}}
            m.profiles_path.write_text(yaml.safe_dump({"profiles": extra}))
            r = await m.client.post("/api/models/reload", headers=m.admin)
            assert r.status_code == 200
            assert r.json()["success"] is True
            assert r.json()["profiles"]["another"]["name"] == "Another"
            assert "another" in (await m.status())["available_profiles"]

    async def test_a_server_left_running_is_adopted(
        self, managed_gateway: Any, tmp_path: Path
    ) -> None:
        """A gateway that died (kill -9) left its model server running: the next one adopts it
        instead of starting a second server on the same port."""
        port = free_port()
        log_dir = tmp_path / "model-logs"
        log_dir.mkdir()
        server = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port),
             "--model", "sim-a"],
            cwd=GATEWAY_DIR,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            (log_dir / "model-server.pid").write_text(f"{server.pid} simulator\n")
            async with managed_gateway(vllm_base_url=f"http://127.0.0.1:{port}/v1") as m:
                status = await running(m, "simulator")
                assert status["switch"] is None
                assert m.server_pid() == server.pid
                assert server.poll() is None
                assert (await chat_once(m.client, m.user)) == ("ok", "sim-a")
            # the adopted server is ours now: it stops with the gateway
            server.wait(timeout=10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
