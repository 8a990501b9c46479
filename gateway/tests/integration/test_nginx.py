"""The project's nginx config, for real: Debian's nginx on free ports in front of a real gateway
process and the simulator, the config rendered by nginx/render-config.sh with only the paths and
ports changed, and a certificate made by scripts/make-cert.sh."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, gateway_env
from tests.docker_engine import IN_CI, apt_install
from tests.ports import free_port
from tests.sim_process import SimProcess, start_simulator

GATEWAY_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = GATEWAY_DIR.parent
NGINX_DIR = REPO_DIR / "nginx"
# Simulator pacing: the first token after 50 ms, then one every 100 ms for 30 tokens (~3 s).
TTFT_MS, ITL_MS, TOKENS = 50, 100, 30


def ensure_nginx() -> str:
    if not Path("/usr/sbin/nginx").exists():
        try:
            apt_install("nginx-light")
        except (subprocess.SubprocessError, OSError) as exc:
            if IN_CI:
                pytest.fail(f"nginx is required in CI and could not be installed: {exc}")
            pytest.skip(f"nginx not installable: {exc}")
    return "/usr/sbin/nginx"


def two_ports() -> tuple[int, int]:
    """Two different free loopback ports (held open together while picked)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [str(REPO_DIR / "scripts" / "make-cert.sh"), "localhost"],
        env=os.environ | {"CERT_FILE": str(cert), "KEY_FILE": str(key)},
        check=True,
        capture_output=True,
    )
    return cert, key


def render_config(out: Path, **settings: str) -> Path:
    """nginx/render-config.sh with the given NGINX_* settings; the rendered file is checked."""
    subprocess.run(
        [str(NGINX_DIR / "render-config.sh"), str(out)],
        env=os.environ | settings,
        check=True,
    )
    text = out.read_text()
    assert "${NGINX_" not in text, "a placeholder was left unrendered"
    return out


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1, verify=False) as client:  # noqa: S501 - readiness probe only
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited early:\n{log.read_text()[-3000:]}")
            try:
                if client.get(url).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not answering within {timeout}s")
            time.sleep(0.05)  # polling against the deadline above


@dataclass
class Stack:
    https: str
    http: str
    gateway: str
    cert: Path
    sim: SimProcess
    root: Path

    def client(self, **kw: object) -> httpx.AsyncClient:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return httpx.AsyncClient(base_url=self.https, verify=ctx, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = ensure_nginx()
    root = tmp_path_factory.mktemp("nginx")
    sim = start_simulator(
        root / "simulator.log",
        "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--tokens", str(TOKENS),
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gw_port = free_port()
        gw_log = root / "gateway.log"
        env = gateway_env(
            DATABASE_URL=f"sqlite+aiosqlite:///{root / 'gateway.db'}",
            JWT_SECRET=TEST_JWT_SECRET,
            VLLM_BASE_URL=f"{sim.url}/v1",
            MODEL_RUNTIME="external",
            MODEL_DEFAULT_PROFILE="",
            TITLE_GENERATION="false",
            RATE_LIMIT_ENABLED="false",
            GATEWAY_PORT=str(gw_port),
            # the proxy's network is trusted (as an operator may trust a compose subnet): then
            # only nginx replacing the client's X-Forwarded-For keeps the client address true
            FORWARDED_ALLOW_IPS="127.0.0.0/8",
        )
        with gw_log.open("wb") as log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(gw_port)],
                cwd=GATEWAY_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(gateway)

        ui = root / "ui"
        (ui / "assets").mkdir(parents=True)
        (ui / "index.html").write_text("<!doctype html><title>vLLM Chat</title><div id=root>")
        (ui / "assets" / "app-1234.js").write_text("console.log('vllm chat');\n" * 200)
        cert, key = make_cert(root)
        http_port, https_port = two_ports()
        conf = render_config(
            root / "nginx.conf",
            NGINX_USER="root",  # the workers read the test's private temp dir
            NGINX_WORKER_PROCESSES="1",
            NGINX_PID_FILE=str(root / "nginx.pid"),
            NGINX_TEMP_DIR=str(root / "temp"),
            NGINX_ACCESS_LOG=str(root / "access.log"),
            NGINX_GATEWAY=f"127.0.0.1:{gw_port}",
            NGINX_SERVER_NAME="localhost",
            NGINX_HTTP_LISTEN=f"127.0.0.1:{http_port}",
            NGINX_HTTPS_LISTEN=f"127.0.0.1:{https_port}",
            NGINX_HTTPS_REDIRECT_PORT=f":{https_port}",
            NGINX_CERT=str(cert),
            NGINX_CERT_KEY=str(key),
            NGINX_UI_ROOT=str(ui),
        )
        (root / "temp").mkdir()
        check = subprocess.run(
            [nginx, "-t", "-e", "stderr", "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        nginx_log = root / "nginx.log"
        with nginx_log.open("wb") as log:
            proxy = subprocess.Popen(
                [nginx, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proxy)
        wait_http(f"http://127.0.0.1:{http_port}/nginx-health", proxy, nginx_log)
        gateway_url = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{gateway_url}/health/live", gateway, gw_log)
        yield Stack(
            https=f"https://localhost:{https_port}",
            http=f"http://localhost:{http_port}",
            gateway=gateway_url,
            cert=cert,
            sim=sim,
            root=root,
        )
    finally:
        for proc in reversed(procs):
            # nginx: SIGQUIT is its graceful shutdown; uvicorn: SIGTERM
            stop_process(proc, signal.SIGQUIT if proc.args[0].endswith("nginx") else signal.SIGTERM)
        sim.stop()


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"username": "admin", "password": "admin123"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_sse_first_event_arrives_before_the_upstream_finishes(
    stack: Stack, path: str
) -> None:
    async with stack.client() as client:
        headers = await login(client)
        body = {
            "model": "simulator-model",
            "messages": [{"role": "user", "content": "Tell me a story"}],
            "stream": True,
            "max_tokens": TOKENS,
        }
        if path == "/api/chat":
            body["save"] = False
        started = time.perf_counter()
        data_at: list[float] = []
        async with client.stream("POST", path, json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in response.headers  # SSE is never gzipped
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data_at.append(time.perf_counter() - started)
        total = data_at[-1]
    # The upstream takes about TTFT + TOKENS * ITL (~3 s); buffered, every event would arrive
    # together at the end. Unbuffered, the first one arrives a few hundred ms in.
    expected_total = (TTFT_MS + TOKENS * ITL_MS) / 1000
    assert total >= expected_total * 0.8, data_at
    assert data_at[0] < 1.0, data_at
    assert total - data_at[0] >= expected_total * 0.6, data_at
    # and they keep trickling: events spread over the stream, not in one burst at the end
    assert len({round(t, 1) for t in data_at}) >= 10, data_at


async def test_tls_with_the_self_signed_certificate(stack: Stack) -> None:
    # verified against the certificate itself (a client with only system CAs refuses it)
    async with stack.client() as client:
        r = await client.get("/health")
        assert r.status_code == 200
        assert r.json()["services"]["database"]["status"] == "up"
        assert r.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=stack.https) as strict:
            await strict.get("/health")
    # plain http is redirected to https, except the health probe of the container
    async with httpx.AsyncClient(base_url=stack.http) as plain:
        r = await plain.get("/api/models?x=1")
        assert r.status_code == 301
        assert r.headers["location"] == f"{stack.https}/api/models?x=1"
        assert (await plain.get("/nginx-health")).text == "ok\n"


async def test_security_headers_on_static_and_api_answers(stack: Stack) -> None:
    async with stack.client() as client:
        page = await client.get("/")
        api = await client.get("/health/live")
    assert page.status_code == 200 and "vLLM Chat" in page.text
    for r in (page, api):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        # one copy each, whoever set it (nginx for static files, the gateway for the API)
        for name in ("strict-transport-security", "x-content-type-options", "x-frame-options"):
            assert len(r.headers.get_list(name)) == 1, (name, r.headers)
        assert "server" not in r.headers or "nginx/" not in r.headers["server"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"


async def test_metrics_refused_publicly(stack: Stack) -> None:
    async with stack.client() as client:
        for path in ("/metrics", "/metrics/", "/metrics?format=text", "/metricsx"):
            r = await client.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "http_requests" not in r.text
    # the gateway itself still serves it to the internal network (loopback here)
    async with httpx.AsyncClient(base_url=stack.gateway) as direct:
        assert (await direct.get("/metrics")).status_code == 200


async def test_static_files_gzip_and_spa_fallback(stack: Stack) -> None:
    async with stack.client(headers={"Accept-Encoding": "gzip"}) as client:
        asset = await client.get("/assets/app-1234.js")
        assert asset.status_code == 200
        assert asset.headers["content-encoding"] == "gzip"
        assert "immutable" in asset.headers["cache-control"]
        assert asset.text.startswith("console.log")
        assert (await client.get("/assets/missing.js")).status_code == 404
        # client-side routes get the app's page
        route = await client.get("/conversations/42")
        assert route.status_code == 200 and "vLLM Chat" in route.text
        # proxied JSON is never compressed by nginx
        api = await client.get("/health")
        assert "content-encoding" not in api.headers


async def test_body_limit_leaves_the_gateway_error_body(stack: Stack) -> None:
    async with stack.client() as client:
        headers = await login(client)
        big = "x" * (3 * 1024 * 1024)  # over the gateway's 2 MiB, under nginx's 8m
        r = await client.post(
            "/api/chat",
            json={"messages": [{"role": "user", "content": big}], "save": False},
            headers=headers,
        )
        assert r.status_code == 413
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
        huge = await client.post("/api/chat", content=b"x" * (9 * 1024 * 1024), headers=headers)
        assert huge.status_code == 413  # nginx's own limit


def _client_from(address: str, base_url: str, cert: Path | None = None) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.0.0.0/8 address is local)."""
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(cert)) if cert is not None else True
    )
    transport = httpx.AsyncHTTPTransport(verify=verify, local_address=address)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30)


async def _forged_wrong_logins(client: httpx.AsyncClient, tries: int) -> list[int]:
    statuses = []
    for _ in range(tries):
        forged = ".".join(str(secrets.randbelow(254) + 1) for _ in range(4))
        r = await client.post(
            "/api/auth/login",
            json={"username": "admin", "password": "wrong"},
            headers={
                "X-Forwarded-For": f"{forged}, 10.{secrets.randbelow(255)}.0.1",
                "X-Real-IP": forged,
                "Forwarded": f"for={forged}",
            },
        )
        statuses.append(r.status_code)
    return statuses


async def test_login_throttle_not_bypassed_by_a_forged_forwarded_for(stack: Stack) -> None:
    """Issue 12 defect 7: nginx appended the client's own X-Forwarded-For and the gateway took
    its left-most entry, so every try with a random one got a fresh throttle bucket."""
    async with _client_from("127.0.0.5", stack.https, stack.cert) as attacker:
        statuses = await _forged_wrong_logins(attacker, 30)
        assert statuses == [401] * 10 + [429] * 20, statuses
        right = {"username": "admin", "password": "admin123"}
        r = await attacker.post(
            "/api/auth/login", json=right, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # keyed on the address nginx saw, not on nginx's own: a neighbour is not throttled
    async with _client_from("127.0.0.6", stack.https, stack.cert) as neighbour:
        r = await neighbour.post("/api/auth/login", json=right)
        assert r.status_code == 200, r.text
    log = (stack.root / "gateway.log").read_text()
    assert '"client_ip":"127.0.0.5"' in log and '"client_ip":"127.0.0.6"' in log


async def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path,
) -> None:
    """Straight to a gateway with the default settings (local mode: no proxy is trusted; it
    trusted loopback, so a local client could claim any address)."""
    port = free_port()
    env = gateway_env(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        JWT_SECRET=TEST_JWT_SECRET,
        MODEL_RUNTIME="external",
        MODEL_DEFAULT_PROFILE="",
        GATEWAY_PORT=str(port),
    )
    env.pop("FORWARDED_ALLOW_IPS", None)
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=GATEWAY_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health/live", gateway, log_path)
        async with _client_from("127.0.0.1", base) as attacker:
            statuses = await _forged_wrong_logins(attacker, 15)
            assert statuses == [401] * 10 + [429] * 5, statuses
    finally:
        stop_process(gateway)
