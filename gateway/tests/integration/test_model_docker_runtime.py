"""The Docker runtime against a real Docker engine (Debian's dockerd started by the test, no
registry): containers created, replaced, adopted, supervised and removed through the Engine API.

The "vLLM" image is a Debian python3 image made with mmdebstrap running the gateway's simulator
(source and site-packages bind-mounted read-only), on host networking bound to 127.0.0.1.
GPU device requests are switched off (DOCKER_GPUS=false): this machine has no GPU.
"""

from __future__ import annotations

import contextlib
import json
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.config import GATEWAY_DIR
from app.main import create_app
from tests.conftest import LiveGateway, make_settings, wait_until
from tests.docker_engine import DockerEngine
from tests.integration.test_model_switching import Managed, chat_once, running
from tests.ports import free_port
from tests.sim_process import SIM_COMMAND

SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def docker_profiles(image: str) -> dict[str, Any]:
    def sim(model: str, delay: str) -> dict[str, Any]:
        return {
            "name": f"Simulator in Docker ({model})",
            "model_id": model,
            "runtime": "docker",
            "cpu_only": True,
            "image": image,
            "command": ["python3", *SIM_COMMAND[1:], "--startup-delay-s", delay],
            "env": {"PYTHONPATH": "/app:/site", "PYTHONDONTWRITEBYTECODE": "1"},
            "volumes": [f"{GATEWAY_DIR}:/app:ro", f"{SITE_PACKAGES}:/site:ro"],
            "ready_timeout_s": 60,
        }

    return {
        "docker-a": sim("sim-docker-a", "0.5"),
        "docker-b": sim("sim-docker-b", "0.5"),
        "docker-missing-image": {**sim("sim-nope", "0"), "image": "local/no-such-image:1"},
        "simulator": {
            "name": "Simulator process",
            "model_id": "sim-process",
            "runtime": "process",
            "cpu_only": True,
            "command": SIM_COMMAND,
        },
    }


def inspect(engine: DockerEngine, name: str) -> dict[str, Any] | None:
    result = engine.docker("inspect", name, check=False)
    if result.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(result.stdout)[0]
    return info


@pytest.fixture
def docker_gateway(
    docker_engine: DockerEngine, python_image: str, tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[Managed]]:
    name = f"vllm-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    profiles_path = tmp_path / "profiles.yaml"
    profiles_path.write_text(yaml.safe_dump({"profiles": docker_profiles(python_image)}))

    @contextlib.asynccontextmanager
    async def start(default: str | None = "docker-a") -> AsyncIterator[Managed]:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            tmp_path,
            vllm_base_url=f"http://127.0.0.1:{port}/v1",
            model_profiles_path=profiles_path,
            model_default_profile=default,
            model_log_dir=tmp_path / "model-logs",
            model_stop_timeout_s=5,
            docker_host=docker_engine.host,
            docker_network="host",
            docker_gpus=False,
            hf_cache_dir=str(tmp_path / "hf-cache"),
            vllm_container_name=name,
            gpu_probe="none",
            title_generation=False,
            rate_limit_enabled=False,
        )
        async with LiveGateway(create_app(settings), free_port()) as gateway:
            managed = Managed(gateway, tmp_path / "model-logs", profiles_path)
            managed.container = name  # type: ignore[attr-defined]
            await managed.login()
            try:
                yield managed
            finally:
                await managed.client.aclose()

    yield start  # type: ignore[misc]
    docker_engine.docker("rm", "-f", name, check=False)


async def test_docker_runtime_start_switch_adopt_and_leave(
    docker_gateway: Any, docker_engine: DockerEngine
) -> None:
    async with docker_gateway() as m:
        name = m.container
        status = await running(m, "docker-a", timeout=60)
        assert status["runtime"] == "docker"
        info = inspect(docker_engine, name)
        assert info is not None and info["State"]["Running"]
        assert info["Config"]["Labels"]["vllm-chat.profile"] == "docker-a"
        assert info["Config"]["Labels"]["vllm-chat.managed"] == "true"
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert "--model" in info["Config"]["Cmd"] and "sim-docker-a" in info["Config"]["Cmd"]
        first_id = info["Id"]
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-docker-a")

        started = time.monotonic()
        assert (await m.switch("docker-b")).status_code == 202
        status = await m.switch_done(timeout=60)
        client_seen_s = time.monotonic() - started
        assert status["current_profile"] == "docker-b", status["error"]
        assert status["history"][0]["outcome"] == "success"
        info = inspect(docker_engine, name)
        assert info is not None and info["Id"] != first_id  # the old one was removed
        assert info["Config"]["Labels"]["vllm-chat.profile"] == "docker-b"
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-docker-b")
        print(
            f"\ndocker-runtime switch: {status['history'][0]['duration_s']:.2f}s "
            f"(stop old container -> new one healthy; 0.5 s of it is the image's load delay), "
            f"client saw {client_seen_s:.2f}s"
        )
        second_id = info["Id"]

    # the gateway stopped; the container did not (restarting vLLM takes minutes on a GPU host)
    info = inspect(docker_engine, name)
    assert info is not None and info["State"]["Running"] and info["Id"] == second_id

    async with docker_gateway(default="docker-a") as m:
        status = await running(m, "docker-b", timeout=30)  # the running container wins
        # the manager's shared state lives in the database (issue 15's lease): a gateway
        # started on it again shows the last switch, finished, and no restart
        last = status["switch"]
        assert last is None or (last["target"] == "docker-b" and last["phase"] == "running")
        assert status["restarts"] == 0
        info = inspect(docker_engine, name)
        assert info is not None and info["Id"] == second_id  # adopted, not restarted
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-docker-b")

        # from a container to a child process: the container goes away
        assert (await m.switch("simulator")).status_code == 202
        status = await m.switch_done(timeout=60)
        assert status["current_profile"] == "simulator", status["error"]
        assert inspect(docker_engine, name) is None
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-process")


async def test_docker_failures_roll_back_and_crashes_restart(
    docker_gateway: Any, docker_engine: DockerEngine
) -> None:
    async with docker_gateway() as m:
        name = m.container
        await running(m, "docker-a", timeout=60)
        assert (await m.switch("docker-missing-image")).status_code == 202
        status = await m.switch_done(timeout=60)
        assert status["current_profile"] == "docker-a"
        assert "No such image" in status["error"] or "no such image" in status["error"].lower()
        assert "rolled back to 'docker-a'" in status["error"]
        assert status["hint"] and "not on this host" in status["hint"]
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-docker-a")

        old_id = inspect(docker_engine, name)["Id"]  # type: ignore[index]
        docker_engine.docker("kill", name)

        async def restarted() -> bool:
            s = await m.status()
            info = inspect(docker_engine, name)
            return bool(
                s["restarts"] == 1
                and s["status"] == "running"
                and info is not None
                and info["Id"] != old_id
            )

        await wait_until(restarted, timeout=60, interval=0.2)
        assert (await chat_once(m.client, m.user)) == ("ok", "sim-docker-a")
