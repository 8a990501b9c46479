"""The compose stack with the gateway scaled to 3 replicas behind nginx (issue 15), on a dockerd
of our own (tests/docker_engine.py) and on the compose network itself, as in production.

Unlike test_compose.py and test_compose_managed.py (host networking), every service here is on
the project's bridge network (a subnet picked per run, so concurrent engines on this host do
not collide), because three replicas of one service cannot share a host port: nginx reaches
`gateway:8080` through Docker's DNS (127.0.0.11), the gateway reaches `postgres`, `redis`,
`docker-proxy` and the model server by name, and the test reaches nginx and each replica at
their container addresses (the host holds the bridge's first address). `GATEWAY_REPLICAS=3` is
the documented knob. The model server is the simulator with the labels the model manager
adopts (MODEL_RUNTIME=docker through the socket proxy); postgres, redis and haproxy are
Debian's, in the local stack image.

What must hold:
- nginx spreads requests over the three replicas (each replica's `/api/models/status` names
  the process that answered: `manager.node`, which starts with its container's hostname), and
  still does after one replica restarts (nginx resolves the name at run time);
- a user's RATE_LIMIT_REQUESTS_PER_MINUTE is one budget across the replicas (Redis): N admitted
  wherever they land, the N+1-th refused with 429 + Retry-After on every replica;
- a switch posted to a replica that does not hold the manager lease is carried out once: the
  engine's events show exactly one model-server container created and started per switch, and
  every replica reports the new model afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import secrets
import ssl
import subprocess
import threading
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
    compose_env,
    serve_directory,
    wheelhouse,
)
from tests.integration.test_compose_managed import two_sim_profiles

SERVICES = ("vllm", "gateway", "nginx", "postgres", "redis", "docker-proxy")
REPLICAS = 3
RPM = 6  # the per-user budget the rate-limit part spends

OVERRIDE = """
services:
  vllm:
    image: vllm-chat/gateway:test
    container_name: {container}
    labels: !override
      vllm-chat.managed: "true"
      vllm-chat.profile: sim-a
    command: ["python", "-m", "simulator", "--host", "0.0.0.0", "--port", "8000",
              "--model", "sim-model-a"]
    ipc: !reset null
    volumes: !reset []
    deploy: !reset {{}}
    healthcheck:
      interval: 1s
      start_period: 0s
  gateway:
    build:
      network: host
      args:
        BASE_IMAGE: {python_image}
        WHEELHOUSE_URL: {wheelhouse}
    env_file: !reset []
    environment:
      JWT_SECRET: {jwt}
      ADMIN_USERNAME: admin
      ADMIN_PASSWORD: {admin_password}
      BCRYPT_ROUNDS: "4"
      POSTGRES_DB: postgres
      POSTGRES_USER: app
      DOCKER_GPUS: "false"
      VLLM_IMAGE: vllm-chat/gateway:test
      VLLM_CONTAINER_NAME: {container}
      MODEL_PROFILES_PATH: /profiles/profiles.yaml
      MODEL_DEFAULT_PROFILE: sim-a
      MODEL_STOP_TIMEOUT_S: "5"
      GPU_PROBE: none
      TITLE_GENERATION: "false"
      RATE_LIMIT_REQUESTS_PER_MINUTE: "{rpm}"
    volumes:
      - {profiles_dir}:/profiles:ro
    # the GPU reservation goes; the replica count (GATEWAY_REPLICAS) stays the base file's
    deploy:
      resources: !reset {{}}
    healthcheck:
      interval: 1s
      start_period: 0s
  nginx:
    build:
      network: host
      args:
        BASE_IMAGE: {stack_image}
    ports: !reset []
    volumes: !override
      - ui-dist:/srv/ui:ro
      - {certs}:/etc/nginx/certs
    depends_on: !override
      gateway:
        condition: service_healthy
    healthcheck:
      interval: 1s
      start_period: 0s
  postgres:
    image: {stack_image}
    user: postgres
    volumes: !reset []
    environment:
      PATH: /usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin
    command: ["sh", "-c", "initdb -D /tmp/pgdata -U app --auth=trust -E UTF8 >/dev/null && echo 'host all all 0.0.0.0/0 trust' >> /tmp/pgdata/pg_hba.conf && exec postgres -D /tmp/pgdata -c listen_addresses='*' -k /tmp"]
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "postgres"]
      interval: 1s
      start_period: 0s
  redis:
    image: {stack_image}
    volumes: !reset []
    command: ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    healthcheck:
      interval: 1s
  docker-proxy:
    image: {stack_image}
"""  # noqa: E501 - YAML lines as compose reads them


def test_nothing_pins_the_gateway_to_one_container(tmp_path: Path) -> None:
    """What `--scale gateway=N` needs of the files, checked without an engine: no fixed name,
    address or host port on the gateway; nginx and Prometheus find it by name at run time."""
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent", "HOME": str(tmp_path)}
    base = json.loads(compose("config", "--format", "json", env=env).stdout)
    gateway = base["services"]["gateway"]
    assert gateway["deploy"]["replicas"] == 1  # GATEWAY_REPLICAS unset
    assert "container_name" not in gateway and not gateway.get("ports"), gateway
    assert not any((n or {}).get("ipv4_address") for n in (gateway.get("networks") or {}).values())
    scaled = json.loads(
        compose("config", "--format", "json", env=env | {"GATEWAY_REPLICAS": "3"}).stdout
    )
    assert scaled["services"]["gateway"]["deploy"]["replicas"] == 3
    assert base["services"]["nginx"]["environment"]["NGINX_GATEWAY"] == "gateway:8080"
    # the rendered nginx config: a resolver and a variable in proxy_pass (resolved per request,
    # not once at start), no upstream{} block named after the service (it would win)
    rendered = subprocess.run(
        [str(REPO_DIR / "nginx" / "render-config.sh")],
        env=env | {"NGINX_GATEWAY": "gateway:8080"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "resolver 127.0.0.11 valid=5s ipv6=off;" in rendered
    assert "set $gateway_upstream gateway:8080;" in rendered
    assert not re.search(r"^\s*upstream\s", rendered, re.MULTILINE)
    proxy = (REPO_DIR / "nginx" / "proxy-gateway.conf").read_text()
    assert "proxy_pass http://$gateway_upstream;" in proxy
    prometheus = yaml.safe_load((REPO_DIR / "monitoring/prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "gateway")
    assert job["dns_sd_configs"] == [
        {"names": ["gateway"], "type": "A", "port": 8080, "refresh_interval": "15s"}
    ]


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 172.31.0.0/16 that no route of this host covers (other engines' bridges)."""
    taken: list[ipaddress.IPv4Network] = []
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        dest, mask = (int(fields[i], 16).to_bytes(4, "little") for i in (1, 7))
        prefix = bin(int.from_bytes(mask, "big")).count("1")
        if prefix:
            taken.append(ipaddress.IPv4Network((ipaddress.IPv4Address(dest), prefix)))
    candidates = list(range(16, 250))
    random.shuffle(candidates)
    for third in candidates:
        net = ipaddress.IPv4Network(f"172.31.{third}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise AssertionError("no free /24 in 172.31.0.0/16")


def tls_context(cert: Path) -> ssl.SSLContext:
    # the chain is checked against nginx's own certificate; the test dials its address, not
    # the certificate's name
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


def until(what: str, check: Any, timeout: float = 120, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.TransportError, ssl.SSLError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)  # polled against the deadline above
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def status_of(base: str, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/models/status", headers=headers, timeout=10, **kw)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def serving(status: dict[str, Any], profile: str) -> bool:
    switch = status.get("switch") or {}
    return (
        status.get("current_profile") == profile
        and status.get("status") == "running"
        and (not switch or switch.get("finished_at") is not None)
    )


def replicas(engine: DockerEngine, project: str) -> dict[str, str]:
    """The running gateway replicas: container hostname (short id) -> address."""
    ids = engine.docker(
        "ps", "-q", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", "label=com.docker.compose.service=gateway",
    ).stdout.split()  # fmt: skip
    found: dict[str, str] = {}
    for c in json.loads(engine.docker("inspect", *ids).stdout) if ids else []:
        found[c["Config"]["Hostname"]] = c["NetworkSettings"]["Networks"]["vllm-chat"]["IPAddress"]
    return found


def vllm_events(engine: DockerEngine, container: str, since: str) -> list[str]:
    """create/start/die/destroy events of the model-server container since `since`."""
    out = engine.docker(
        "events", "--since", since, "--until", engine_now(engine),
        "--filter", "type=container", "--filter", f"container={container}",
        "--format", "{{.Action}}",
    ).stdout.split()  # fmt: skip
    return [a for a in out if a in {"create", "start", "die", "destroy"}]


def engine_now(engine: DockerEngine) -> str:
    return engine.docker("info", "--format", "{{json .SystemTime}}").stdout.strip().strip('"')


def test_compose_gateway_scaled_to_three_behind_nginx(
    docker_engine: DockerEngine, python_image: str, tmp_path: Path
) -> None:
    engine = docker_engine
    started = time.monotonic()
    timings: dict[str, float] = {}
    stack_image = debian_image(engine, "stack", STACK_PACKAGES)
    project = f"vcs-scaled-{secrets.token_hex(3)}"
    container = f"{project}-vllm"
    admin_password = secrets.token_urlsafe(12)
    profiles_dir = two_sim_profiles(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    subnet = free_subnet()
    hosts = list(subnet.hosts())
    nginx_ip = str(hosts[9])  # .10, below the range the other containers get theirs from
    override = tmp_path / "docker-compose.scaled.yml"
    files = (REPO_DIR / "docker-compose.yml", override)
    env = compose_env(
        engine,
        project,
        HF_CACHE_DIR=str(tmp_path / "hf-cache"),
        GATEWAY_REPLICAS=str(REPLICAS),
        COMPOSE_SUBNET=str(subnet),
        COMPOSE_IP_RANGE=str(ipaddress.IPv4Network(f"{subnet.network_address + 128}/25")),
        NGINX_IP=nginx_ip,
        PROMETHEUS_IP=str(hosts[10]),
        VLLM_CONTAINER_NAME=container,
    )

    def write(wheels_url: str) -> None:
        override.write_text(
            OVERRIDE.format(
                container=container,
                python_image=python_image,
                stack_image=stack_image,
                wheelhouse=wheels_url,
                jwt=secrets.token_hex(32),
                admin_password=admin_password,
                profiles_dir=profiles_dir,
                certs=certs,
                rpm=RPM,
            )
        )

    with serve_directory(wheelhouse()) as wheels_url:
        write(wheels_url)
        config = json.loads(compose("config", "--format", "json", env=env, files=files).stdout)
        assert config["services"]["gateway"]["deploy"]["replicas"] == REPLICAS
        built = compose("build", "gateway", "nginx", env=env, files=files, timeout=900)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    write("http://127.0.0.1:9/")
    timings["images"] = time.monotonic() - started
    https = f"https://{nginx_ip}"
    try:
        t = time.monotonic()
        up = compose("up", "-d", "--no-build", *SERVICES, env=env, files=files, timeout=300)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        gws = replicas(engine, project)
        assert len(gws) == REPLICAS, gws
        until("nginx certificate", lambda: (certs / "server.crt").exists(), timeout=60)
        ctx = tls_context(certs / "server.crt")
        with httpx.Client(base_url=https, verify=ctx, timeout=30) as nginx:
            until(
                "healthy through nginx",
                lambda: nginx.get("/health").json()["status"] == "healthy",
            )
            timings["up until healthy"] = time.monotonic() - t
            r = nginx.post(
                "/api/auth/login", json={"username": "admin", "password": admin_password}
            )
            assert r.status_code == 200, r.text
            admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
            direct = {host: f"http://{ip}:8080" for host, ip in gws.items()}
            for base in direct.values():
                until(
                    "sim-a on every replica", lambda b=base: serving(status_of(b, admin), "sim-a")
                )

            # (1) nginx spreads requests over every replica
            def node_host(status: dict[str, Any]) -> str:
                node = str(status["manager"]["node"])
                return next(h for h in gws if node.startswith(f"{h}-"))

            seen = [node_host(status_of(f"{https}", admin, verify=ctx)) for _ in range(30)]
            split = {h: seen.count(h) for h in gws}
            print("status requests per replica through nginx:", split)
            assert all(split.values()), split

            # (2) one per-user budget across the replicas (Redis)
            r = nginx.post(
                "/api/admin/users",
                json={"username": "alice", "password": "alice-password-1"},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            r = nginx.post(
                "/api/auth/login", json={"username": "alice", "password": "alice-password-1"}
            )
            assert r.status_code == 200, r.text
            alice = {"Authorization": f"Bearer {r.json()['access_token']}"}
            chat = {"model": "current", "messages": [{"role": "user", "content": "hi"}]}
            bases = list(direct.values())
            for i in range(RPM):  # spread by hand: two on each replica
                r = httpx.post(
                    f"{bases[i % len(bases)]}/v1/chat/completions",
                    json=chat, headers=alice, timeout=30,
                )  # fmt: skip
                assert r.status_code == 200, (i, r.text)
            refused = [nginx.post("/v1/chat/completions", json=chat, headers=alice)]
            refused += [
                httpx.post(f"{b}/v1/chat/completions", json=chat, headers=alice, timeout=30)
                for b in bases
            ]
            for r in refused:
                assert r.status_code == 429, r.text
                assert int(r.headers["retry-after"]) >= 1, r.headers
                assert r.headers["x-ratelimit-limit"] == str(RPM), r.headers
                assert r.json()["error"]["code"] == "rate_limited", r.text
            # another user's budget is untouched
            r = nginx.post("/v1/chat/completions", json=chat, headers=admin)
            assert r.status_code == 200 and r.json()["model"] == "sim-model-a", r.text

            # (3) a switch posted to a replica that does not act is carried out once
            for target, model in (("sim-b", "sim-model-b"), ("sim-a", "sim-model-a")):
                leader = status_of(bases[0], admin)["manager"]["leader"]
                follower = next(b for h, b in direct.items() if not leader.startswith(f"{h}-"))
                since = engine_now(engine)
                t = time.monotonic()
                r = httpx.post(
                    f"{follower}/api/models/switch",
                    json={"profile_id": target}, headers=admin, timeout=30,
                )  # fmt: skip
                assert r.status_code == 202, r.text
                for base in bases:
                    until(
                        f"{target} on {base}",
                        lambda b=base, p=target: serving(status_of(b, admin), p),
                    )
                timings[f"switch to {target} seen by every replica"] = time.monotonic() - t
                events = vllm_events(engine, container, since)
                print(f"model-server events for the switch to {target}:", events)
                assert events.count("create") == 1 and events.count("start") == 1, events
                # (the admin's budget is RPM too: one chat per switch)
                r = nginx.post("/v1/chat/completions", json=chat, headers=admin)
                assert r.status_code == 200 and r.json()["model"] == model, r.text

            # (4) a replica restarts (a new process, maybe a new address), then one more is
            # added: status requests through nginx all the while get 200 (nginx goes on to
            # the next address when one refuses or is gone), and each new process gets
            # requests without nginx being reloaded (it resolves the name at run time)
            leader = status_of(bases[0], admin)["manager"]["leader"]
            victim = next(h for h in gws if not leader.startswith(f"{h}-"))
            before = status_of(direct[victim], admin)["manager"]["node"]
            codes: list[int | str] = []
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(base_url=https, verify=ctx, timeout=30) as client:
                    while not stop.is_set():
                        try:
                            codes.append(
                                client.get("/api/models/status", headers=admin).status_code
                            )
                        except httpx.TransportError as exc:
                            codes.append(repr(exc))

            worker = threading.Thread(target=traffic)
            worker.start()
            try:
                engine.docker("restart", "-t", "10", victim, timeout=120)
                after = until(
                    "the restarted replica running",
                    lambda: (g := replicas(engine, project)) and len(g) == REPLICAS and g,
                )
                print("restarted replica's address:", gws[victim], "->", after[victim])

                def seen_through_nginx(host: str, not_node: str = "") -> bool:
                    node = str(
                        nginx.get("/api/models/status", headers=admin).json()["manager"]["node"]
                    )
                    return node.startswith(f"{host}-") and node != not_node

                until(
                    "the restarted replica answering through nginx",
                    lambda: seen_through_nginx(victim, before),
                    timeout=90,
                    every=0.05,
                )
                scaled = compose(
                    "up", "-d", "--no-build", "--no-recreate", "--scale",
                    f"gateway={REPLICAS + 1}", "gateway", env=env, files=files, timeout=300,
                )  # fmt: skip
                assert scaled.returncode == 0, scaled.stdout[-4000:] + scaled.stderr[-4000:]
                grown = until(
                    "a fourth replica running",
                    lambda: (g := replicas(engine, project)) and len(g) == REPLICAS + 1 and g,
                )
                (added,) = set(grown) - set(after)
                until(
                    "the added replica answering through nginx",
                    lambda: seen_through_nginx(added),
                    timeout=90,
                    every=0.05,
                )
            finally:
                stop.set()
                worker.join(timeout=60)
            split = {code: codes.count(code) for code in set(codes)}
            print("status through nginx during the restart and the scale-up:", split)
            assert set(codes) == {200} and len(codes) > 20, split
    except BaseException:
        logs = compose("logs", "--no-color", "--tail", "80", env=env, files=files)
        print(logs.stdout[-16000:], logs.stderr[-2000:])
        raise
    finally:
        down = compose("down", "-v", "--remove-orphans", "-t", "10", env=env, files=files)
        print("compose down:", down.returncode, down.stderr[-2000:])
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    # the gateway-made model server went with the project
    assert engine.docker("ps", "-aq").stdout.strip() == ""
