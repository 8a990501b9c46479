"""Compose with the model manager in charge (MODEL_RUNTIME=docker, the production default), on
a dockerd of our own (tests/docker_engine.py), driven by the operator's own scripts.

The vllm service is the simulator (run from the gateway image) with the labels the model
manager adopts; the gateway reaches the engine through the compose socket proxy (haproxy's
allow-list) and, on a switch, replaces that container with one it creates. What must hold:
the gateway's container joins the compose project (its labels), so `./status` names the model,
`./logs vllm` shows its output, `./stop` (`compose down`) leaves no container, and the stack
comes up again. Every container's log rotates (json-file max-size/max-file). nginx and the UI
are left out: tests/integration/test_compose.py runs them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.docker_engine import DockerEngine, debian_image
from tests.integration.test_compose import (
    REPO_DIR,
    STACK_PACKAGES,
    compose,
    compose_bin,
    compose_env,
    distinct_ports,
    serve_directory,
    wheelhouse,
)
from tests.sim_process import SIM_COMMAND

SERVICES = ("vllm", "gateway", "postgres", "redis", "docker-proxy")

OVERRIDE = """
services:
  vllm:
    image: vllm-chat/gateway:test
    container_name: {container}
    labels: !override
      vllm-chat.managed: "true"
      vllm-chat.profile: sim-a
    command: ["python", "-m", "simulator", "--host", "127.0.0.1", "--port", "{sim}",
              "--model", "sim-model-a"]
    network_mode: host
    ipc: !reset null
    volumes: !reset []
    deploy: !reset {{}}
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:{sim}/health', timeout=2)"]
      interval: 1s
      start_period: 0s
  gateway:
    build:
      network: host
      args:
        BASE_IMAGE: {python_image}
        WHEELHOUSE_URL: {wheelhouse}
    network_mode: host
    env_file: !reset []
    environment:
      ENVIRONMENT: production
      JWT_SECRET: {jwt}
      ADMIN_USERNAME: admin
      ADMIN_PASSWORD: {admin_password}
      BCRYPT_ROUNDS: "4"
      GATEWAY_HOST: 127.0.0.1
      GATEWAY_PORT: "{gw}"
      FORWARDED_ALLOW_IPS: 127.0.0.1
      POSTGRES_HOST: 127.0.0.1
      POSTGRES_PORT: "{pg}"
      POSTGRES_DB: postgres
      REDIS_URL: redis://127.0.0.1:{redis}/0
      DOCKER_HOST: tcp://127.0.0.1:{proxy}
      DOCKER_NETWORK: host
      DOCKER_GPUS: "false"
      VLLM_IMAGE: vllm-chat/gateway:test
      VLLM_CONTAINER_NAME: {container}
      VLLM_BASE_URL: http://127.0.0.1:{sim}/v1
      MODEL_PROFILES_PATH: /profiles/profiles.yaml
      MODEL_DEFAULT_PROFILE: sim-a
      MODEL_STOP_TIMEOUT_S: "5"
      GPU_PROBE: none
      TITLE_GENERATION: "false"
      LOG_MAX_SIZE: 1m
      LOG_MAX_FILE: "3"
    volumes:
      - {profiles_dir}:/profiles:ro
    command: ["python", "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "{gw}"]
    deploy: !reset {{}}
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:{gw}/health/live', timeout=2)"]
      interval: 1s
      start_period: 0s
  postgres:
    image: {stack_image}
    network_mode: host
    user: postgres
    volumes: !reset []
    environment:
      PATH: /usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin
    command: ["sh", "-c", "initdb -D /tmp/pgdata -U app --auth=trust -E UTF8 >/dev/null && exec postgres -D /tmp/pgdata -c listen_addresses=127.0.0.1 -p {pg} -k /tmp"]
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "{pg}", "-U", "app", "-d", "postgres"]
      interval: 1s
      start_period: 0s
  redis:
    image: {stack_image}
    network_mode: host
    volumes: !reset []
    command: ["redis-server", "--bind", "127.0.0.1", "--port", "{redis}", "--save", "", "--appendonly", "no"]
    healthcheck:
      test: ["CMD", "redis-cli", "-p", "{redis}", "ping"]
      interval: 1s
  docker-proxy:
    image: {stack_image}
    network_mode: host
    environment:
      DOCKER_PROXY_BIND: 127.0.0.1:{proxy}
"""  # noqa: E501 - YAML lines as compose reads them


def sim_profile(model: str) -> dict[str, Any]:
    return {
        "name": f"Simulator in Docker ({model})",
        "model_id": model,
        "runtime": "docker",
        "cpu_only": True,
        "command": [*SIM_COMMAND, "--startup-delay-s", "0.3"],
        "ready_timeout_s": 60,
    }


def two_sim_profiles(tmp_path: Path) -> Path:
    """A profiles folder with two simulator profiles in Docker, sim-a and sim-b."""
    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    (profiles_dir / "profiles.yaml").write_text(
        yaml.safe_dump(
            {"profiles": {"sim-a": sim_profile("sim-model-a"), "sim-b": sim_profile("sim-model-b")}}
        )
    )
    return profiles_dir


def test_compose_logging_limits_on_every_service() -> None:
    config = json.loads(
        compose("config", "--format", "json", files=(REPO_DIR / "docker-compose.yml",)).stdout
    )
    for name, svc in config["services"].items():
        logging = svc.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 1, name
    gw = config["services"]["gateway"]["environment"]
    # the gateway gives its vLLM containers the same limits and the project's labels
    assert gw["LOG_MAX_SIZE"] == config["services"]["vllm"]["logging"]["options"]["max-size"]
    assert gw["COMPOSE_PROJECT_NAME"] == config["name"]
    assert gw["COMPOSE_SERVICE"] == "vllm" and gw["MODEL_RUNTIME"] == "docker"
    # the HF cache is a host directory, the same one the vllm service mounts
    assert gw["HF_CACHE_DIR"].startswith("/")
    vllm_mounts = config["services"]["vllm"]["volumes"]
    assert any(v["type"] == "bind" and v["source"] == gw["HF_CACHE_DIR"] for v in vllm_mounts), (
        vllm_mounts
    )
    # .env.sample's `~/.cache/huggingface`: compose expands it for vllm, the gateway gets the
    # host's home to expand it the same way (the engine needs the host's path)
    tilde_env = os.environ | {
        "HF_CACHE_DIR": "~/.cache/huggingface",
        "HOME": "/home/ops",
        "DOCKER_HOST": "unix:///nonexistent",
    }
    tilde = json.loads(
        compose(
            "config", "--format", "json", env=tilde_env, files=(REPO_DIR / "docker-compose.yml",)
        ).stdout
    )
    gw = tilde["services"]["gateway"]["environment"]
    assert (gw["HF_CACHE_DIR"], gw["HOST_HOME"]) == ("~/.cache/huggingface", "/home/ops")
    sources = [v["source"] for v in tilde["services"]["vllm"]["volumes"]]
    assert "/home/ops/.cache/huggingface" in sources


def run_script(
    name: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_DIR / name), *args],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_model(
    gw: str, headers: dict[str, str], profile: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{gw}/api/models/status", headers=headers, timeout=5)
            status = r.json() if r.status_code == 200 else {"http": r.status_code}
        except (httpx.TransportError, ValueError):
            status = {}
        switching = (status.get("switch") or {}).get("finished_at") is None and status.get("switch")
        if (
            status.get("current_profile") == profile
            and status.get("status") == "running"
            and not switching
        ):
            return status
        time.sleep(0.25)  # polling the manager's state against the deadline above
    raise AssertionError(f"{profile} not running in {timeout}s: {status}")


def login(gw: str, password: str, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.post(
                f"{gw}/api/auth/login",
                json={"username": "admin", "password": password},
                timeout=5,
            )
            if r.status_code == 200:
                return {"Authorization": f"Bearer {r.json()['access_token']}"}
            last = r.text
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.25)  # the gateway is still starting; polled against the deadline
    raise AssertionError(f"no login in {timeout}s: {last}")


def chat_model(gw: str, headers: dict[str, str]) -> str:
    r = httpx.post(
        f"{gw}/v1/chat/completions",
        json={"model": "current", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["model"])


def project_containers(engine: DockerEngine, project: str) -> list[dict[str, Any]]:
    ids = engine.docker(
        "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
    ).stdout.split()
    if not ids:
        return []
    data: list[dict[str, Any]] = json.loads(engine.docker("inspect", *ids).stdout)
    return data


def test_compose_docker_runtime_switch_status_stop_and_up_again(
    docker_engine: DockerEngine, python_image: str, tmp_path: Path
) -> None:
    engine = docker_engine
    stack_image = debian_image(engine, "stack", STACK_PACKAGES)
    project = f"vcs-managed-{secrets.token_hex(3)}"
    container = f"{project}-vllm"
    admin_password = secrets.token_urlsafe(12)
    profiles_dir = two_sim_profiles(tmp_path)
    override = tmp_path / "docker-compose.managed.yml"
    files = (REPO_DIR / "docker-compose.yml", override)
    env = compose_env(
        engine,
        project,
        HF_CACHE_DIR=str(tmp_path / "hf-cache"),
    )
    # the operator's scripts on the same engine, files and project
    script_env = env | {
        "DEPLOY_MODE": "compose",
        "COMPOSE_COMMAND": str(compose_bin()),
        "COMPOSE_FILE": ":".join(map(str, files)),
        "VLLM_CONTAINER_NAME": container,
        "NO_COLOR": "1",
    }

    def write(ports: dict[str, int], wheels_url: str) -> None:
        override.write_text(
            OVERRIDE.format(
                **ports,
                container=container,
                python_image=python_image,
                stack_image=stack_image,
                wheelhouse=wheels_url,
                jwt=secrets.token_hex(32),
                admin_password=admin_password,
                profiles_dir=profiles_dir,
            )
        )

    with serve_directory(wheelhouse()) as wheels_url:
        write(distinct_ports(), wheels_url)
        built = compose("build", "gateway", env=env, files=files, timeout=900)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    ports = distinct_ports()
    write(ports, "http://127.0.0.1:9/")
    gw = f"http://127.0.0.1:{ports['gw']}"
    try:
        up = compose("up", "-d", "--no-build", *SERVICES, env=env, files=files, timeout=300)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        headers = login(gw, admin_password)
        status = wait_model(gw, headers, "sim-a")
        # the compose-started container was adopted, not replaced
        assert status["runtime"] == "docker" and status["restarts"] == 0
        first = engine.docker("inspect", "-f", "{{.Id}}", container).stdout.strip()
        compose_hash = engine.docker(
            "inspect", "-f", '{{index .Config.Labels "com.docker.compose.config-hash"}}', container
        ).stdout.strip()
        assert compose_hash and compose_hash != "set-by-vllm-chat-gateway"
        cmd = json.loads(engine.docker("inspect", "-f", "{{json .Config.Cmd}}", container).stdout)
        assert "--startup-delay-s" not in cmd  # compose's command, not the profile's
        assert chat_model(gw, headers) == "sim-model-a"

        # switch twice: each new container is the project's vllm service
        for target, model in (("sim-b", "sim-model-b"), ("sim-a", "sim-model-a")):
            r = httpx.post(
                f"{gw}/api/models/switch", json={"profile_id": target}, headers=headers, timeout=10
            )
            assert r.status_code == 202, r.text
            status = wait_model(gw, headers, target)
            assert status["switch"]["phase"] == "running", status
            assert chat_model(gw, headers) == model
            info = json.loads(engine.docker("inspect", container).stdout)[0]
            assert info["Id"] != first
            labels = info["Config"]["Labels"]
            assert labels["com.docker.compose.project"] == project
            assert labels["com.docker.compose.service"] == "vllm"
            assert labels["com.docker.compose.oneoff"] == "False"
            # carried over from the container compose made: `compose up` keeps the switch
            assert labels["com.docker.compose.config-hash"] == compose_hash
            assert labels["vllm-chat.profile"] == target
            assert info["HostConfig"]["LogConfig"] == {
                "Type": "json-file",
                "Config": {"max-size": "1m", "max-file": "3"},
            }
            # the vllm service's health check, on the model server's port
            check = info["Config"]["Healthcheck"]["Test"]
            assert check[:2] == ["CMD", "python3"] and f":{ports['sim']}/health" in check[-1]
            first = info["Id"]

        # every container of the project rotates its log
        for c in project_containers(engine, project):
            assert c["HostConfig"]["LogConfig"]["Type"] == "json-file", c["Name"]
            assert c["HostConfig"]["LogConfig"]["Config"].get("max-size"), c["Name"]

        st = run_script("status", env=script_env)
        out = st.stdout + st.stderr
        print("\n./status after two switches:\n" + out)
        assert st.returncode == 0, out
        assert "model: sim-a [docker] status running, serving sim-model-a" in out, out
        assert "last switch: sim-b -> sim-a: phase running" in out, out
        assert "health: healthy" in out and "CPU and memory" in out, out
        assert container in out, out  # compose ps lists the gateway-made container

        logs = run_script("logs", "vllm", "--no-follow", "-n", "50", env=script_env)
        assert logs.returncode == 0, logs.stderr
        # the container the gateway made (its profile's command has the load delay)
        assert "simulator loading for 0.3s" in logs.stdout, logs.stdout[-2000:]
        assert "simulator listening on http://127.0.0.1:" in logs.stdout, logs.stdout[-2000:]
        glogs = run_script("logs", "gateway", "--no-follow", "-n", "400", env=script_env)
        assert glogs.returncode == 0, glogs.stderr
        readable = [line for line in glogs.stdout.splitlines() if "POST /api/models/switch" in line]
        assert readable and " 202 " in readable[-1] and "rid=" in readable[-1], readable
        raw = run_script("logs", "gateway", "--json", "--no-follow", "-n", "50", env=script_env)
        assert all(json.loads(line) for line in raw.stdout.splitlines() if line.startswith("{")), (
            raw.stdout[-1000:]
        )

        stop = run_script("stop", env=script_env, timeout=180)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        # compose down took the gateway's container too: nothing left on the engine
        assert engine.docker("ps", "-aq").stdout.strip() == ""

        # and the stack comes back: no name collision, the default profile adopted again
        up = compose("up", "-d", "--no-build", *SERVICES, env=env, files=files, timeout=300)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        headers = login(gw, admin_password)
        status = wait_model(gw, headers, "sim-a")
        assert status["restarts"] == 0
        assert chat_model(gw, headers) == "sim-model-a"

        # scripts/cleanup.sh takes the gateway-made container too (and the volumes)
        r = httpx.post(
            f"{gw}/api/models/switch", json={"profile_id": "sim-b"}, headers=headers, timeout=10
        )
        assert r.status_code == 202, r.text
        wait_model(gw, headers, "sim-b")
        clean = run_script("scripts/cleanup.sh", "--yes", env=script_env, timeout=180)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert engine.docker("ps", "-aq").stdout.strip() == ""
        volumes = engine.docker("volume", "ls", "-q").stdout.split()
        assert not [v for v in volumes if v.startswith(project)], volumes

        # a model container an older gateway made (no compose labels): ./stop removes it too,
        # by its name and the manager's label, or the next `compose up` would collide on it
        engine.docker(
            "create", "--name", container, "--label", "vllm-chat.managed=true", stack_image, "true"
        )
        stray = run_script("stop", env=script_env, timeout=180)
        assert stray.returncode == 0, stray.stdout + stray.stderr
        assert "that compose did not know" in stray.stderr
        assert engine.docker("ps", "-aq").stdout.strip() == ""
    except BaseException:
        logs = compose("logs", "--no-color", "--tail", "80", env=env, files=files)
        print(logs.stdout[-12000:], logs.stderr[-2000:])
        raise
    finally:
        down = compose("down", "-v", "--remove-orphans", "-t", "10", env=env, files=files)
        print("compose down:", down.returncode, down.stderr[-2000:])
        engine.docker("rm", "-f", container, check=False)
    assert engine.docker("ps", "-aq").stdout.strip() == ""
