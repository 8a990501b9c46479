"""The observability pack against the real Prometheus (Debian's `prometheus` package):
`promtool check/test rules` on monitoring/prometheus, and a Prometheus server built from the
repository's prometheus.yml scraping a live gateway (managing simulator model servers, Redis,
a stand-in `nvidia-smi`) and vLLM's /metrics, with chat traffic, errors and a model switch:
every panel query of the Grafana dashboard must return data, and the GPU gauges must come from
the acting manager's timer (nobody opens /api/models)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import SHARED_REDIS, LiveGateway, bearer, make_settings, wait_until
from tests.docker_engine import IN_CI, apt_install
from tests.ports import free_port
from tests.sim_process import SIM_COMMAND

GATEWAY_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = GATEWAY_DIR.parent
MONITORING = REPO_DIR / "monitoring"
RULES = MONITORING / "prometheus" / "rules"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "vllm-chat.json"
RENDER_SCRIPT = REPO_DIR / "scripts" / "render_dashboard.py"

# a model server that keeps requests in flight (so running, waiting and KV-cache use move) and
# queues past two at a time
SIM = [*SIM_COMMAND, "--max-model-len", "{max_model_len}", "--max-num-seqs", "2"]
SIM = [*SIM, "--kv-cache-tokens", "2000", "--ttft-ms", "60", "--itl-ms", "15", "--tokens", "20"]
PROFILES: dict[str, Any] = {
    name: {
        "name": name,
        "model_id": model,
        "cpu_only": True,
        "runtime": "process",
        "command": SIM,
        "ready_timeout_s": 30,
    }
    for name, model in (("sim-a", "sim-model-a"), ("sim-b", "sim-model-b"))
}
# what the stand-in nvidia-smi prints: index, name, memory.total, memory.used (MiB), utilization
FAKE_NVIDIA_SMI = """#!/bin/sh
echo x >> "{calls}"
echo "0, NVIDIA H100 80GB HBM3, 81559, 61234, 87"
echo "1, NVIDIA H100 80GB HBM3, 81559, 1024, [N/A]"
"""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        try:
            apt_install("prometheus")
        except (subprocess.SubprocessError, OSError) as exc:
            if IN_CI:
                pytest.fail(f"prometheus is required in CI and could not be installed: {exc}")
            pytest.skip(f"prometheus not installable: {exc}")
        path = shutil.which(name)
    assert path, f"{name} missing after installing Debian's prometheus package"
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return _tool("prometheus")


def test_rules_check(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", *sorted(str(p) for p in RULES.glob("*.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_rules_unit_tests_cover_every_alert(promtool: str) -> None:
    tests = sorted(MONITORING.glob("prometheus/tests/*.yml"))
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        rule["alert"]
        for path in RULES.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {
        "GatewayHighErrorRate",
        "ChatTTFTOverSLA",
        "ModelNotRunning",
        "GPUMemoryNearFull",
        "UsageQueueBackingUp",
        "RedisDown",
    } <= alerts
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in tests:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == alerts, f"alerts without a firing test: {alerts - firing}"
    assert quiet == alerts, f"alerts without a not-firing test: {alerts - quiet}"
    # the runbook has a section for every alert
    runbook = (REPO_DIR / "docs" / "monitoring.md").read_text()
    for alert in alerts:
        assert f"### {alert}" in runbook, alert


def test_compose_profile_pins_images_and_mounts_the_pack() -> None:
    compose = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        image = service["image"].rsplit(":-", 1)[-1].rstrip("}")
        assert ":" in image and not image.endswith(":latest"), image
        for volume in service["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_DIR / source).exists(), source


def test_compose_monitoring_profile_resolves() -> None:
    """The real Compose v2 binary: the profile's services exist only with the profile, Prometheus
    has its fixed address and the gateway lets that address read /metrics."""
    from tests.integration.test_compose import compose

    result = compose("--profile", "monitoring", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    prometheus_ip = services["prometheus"]["networks"]["default"]["ipv4_address"]
    allowed = services["gateway"]["environment"]["METRICS_ALLOW_NETWORKS"].split(",")
    assert f"{prometheus_ip}/32" in allowed and "127.0.0.1/32" in allowed
    assert services["grafana"]["ports"][0]["host_ip"] == "127.0.0.1"
    assert services["prometheus"]["ports"][0]["host_ip"] == "127.0.0.1"
    plain = json.loads(compose("config", "--format", "json").stdout)["services"]
    assert "prometheus" not in plain and "grafana" not in plain


# ------------------------------------------------------------------------- the live scrape
def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in (
                    ("$__rate_interval", "1m"),
                    ("$__range", "10m"),
                    ("$__interval", "5s"),
                ):
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"unfilled variable in {panel['title']}: {expr}"
                out.append((panel["title"], expr))

    walk(board["panels"])
    return out


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = []
    for series in result:
        for _, value in series.get("values", []) or [series["value"]]:
            number = float(value)
            if math.isfinite(number):
                values.append(number)
    return values


class Prometheus:
    def __init__(self, binary: str, tmp: Path, gateway: str, vllm: str) -> None:
        config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(RULES / "*.yml")]
        targets = {"gateway": gateway, "vllm": vllm}
        for job in config["scrape_configs"]:
            job.pop("dns_sd_configs", None)  # compose's service discovery: no Docker DNS here
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    async def query(self, client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        r = await client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "nvidia-smi.calls"
    script = bindir / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI.format(calls=calls))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.fixture
def prometheus_for(prometheus_bin: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(gateway: str, vllm: str) -> Prometheus:
        (tmp_path / "prom").mkdir()
        prom = Prometheus(prometheus_bin, tmp_path / "prom", gateway, vllm)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


@contextlib.asynccontextmanager
async def live_gateway(tmp_path: Path, redis_prefix: str) -> AsyncIterator[LiveGateway]:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(yaml.safe_dump({"profiles": PROFILES}))
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        tmp_path,
        vllm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        model_profiles_path=profiles,
        model_default_profile="sim-a",
        model_log_dir=tmp_path / "model-logs",
        model_stop_timeout_s=5,
        title_generation=False,
        gpu_probe="nvidia-smi",
        gpu_sample_interval_s=1,
        redis_url=SHARED_REDIS,
        rate_limit_key_prefix=redis_prefix,
        rate_limit_requests_per_minute=100_000,
        rate_limit_concurrent_streams=100,
    )
    async with LiveGateway(create_app(settings), free_port()) as gateway:
        yield gateway


async def chat_load(url: str, token: str, stop: asyncio.Event) -> None:
    """Conversations of several turns (the prefix cache hits on their history), streamed and
    not, on both chat APIs, four at a time, until `stop`."""

    async def user(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=30) as c:
            turn = 0
            history: list[dict[str, str]] = [{"role": "system", "content": f"user {n}"}]
            while not stop.is_set():
                turn += 1
                history.append({"role": "user", "content": f"question {turn} from {n}"})
                body = {"model": "current", "messages": history, "stream": turn % 2 == 0}
                path = "/v1/chat/completions" if n % 2 else "/api/chat"
                r = await c.post(path, json=body)
                assert r.status_code == 200, r.text
                history.append({"role": "assistant", "content": "an answer"})
                if len(history) > 12:
                    history = history[:1]

    async def mistakes() -> None:
        """Now and then a bad password (401) and a model-server failure (502): the error panels
        draw rates, which need errors after the first scrape."""
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = await c.post("/api/auth/login", json={"username": "nobody", "password": "x"})
                assert r.status_code in (401, 429), r.text  # 429: the login throttle's turn
                failing = {
                    "model": "current",
                    "messages": [{"role": "user", "content": "[[sim:fail=500]] hi"}],
                }
                r = await c.post("/v1/chat/completions", json=failing, headers=bearer(token))
                assert r.status_code >= 500, r.text
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    await asyncio.gather(*(user(n) for n in range(5)), mistakes())


async def test_prometheus_scrapes_gateway_and_vllm_and_every_panel_has_data(
    tmp_path: Path,
    redis_prefix: str,
    fake_nvidia_smi: Path,
    prometheus_for: Any,
) -> None:
    async with live_gateway(tmp_path, redis_prefix) as gw, gw.client() as anon:
        admin = (
            await anon.post("/api/auth/login", json={"username": "admin", "password": "admin123"})
        ).json()["access_token"]

        async def model_running(profile: str) -> bool:
            r = await anon.get("/api/models/status", headers=bearer(admin))
            s = r.json()
            return bool(s["status"] == "running" and s["current_profile"] == profile)

        await wait_until(lambda: model_running("sim-a"), timeout=60, interval=0.1)
        # the GPU gauges come from the acting manager's timer: nothing has opened /api/models
        # but the status call above, and the probe keeps running
        calls_before = len(fake_nvidia_smi.read_text().splitlines())
        await wait_until(
            lambda: len(fake_nvidia_smi.read_text().splitlines()) >= calls_before + 2,
            timeout=30,
            interval=0.1,
        )
        metrics = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families((await anon.get("/metrics")).text)
            for sample in family.samples
        }
        assert metrics[("gpu_memory_used_bytes", (("gpu", "0"),))] == 61234 * 1024 * 1024
        assert metrics[("gpu_memory_total_bytes", (("gpu", "1"),))] == 81559 * 1024 * 1024
        assert metrics[("gpu_utilization_percent", (("gpu", "0"),))] == 87
        assert metrics[("gateway_redis_up", (("store", "redis"),))] == 1

        vllm = gw.app.state.settings.vllm_base_url.removeprefix("http://").split("/")[0]
        prom = prometheus_for(gw.url.removeprefix("http://"), vllm)
        async with httpx.AsyncClient(timeout=10) as http:

            async def targets_up() -> bool:
                try:
                    result = await prom.query(http, "up")
                except (httpx.HTTPError, AssertionError, ValueError):
                    return False
                return {(s["metric"]["job"], s["value"][1]) for s in result} == {
                    ("gateway", "1"),
                    ("vllm", "1"),
                }

            await wait_until(targets_up, timeout=60, interval=0.25)

            stop = asyncio.Event()
            load = asyncio.create_task(chat_load(gw.url, admin, stop))
            try:
                async with gw.client(admin) as c:
                    # errors the "errors by code" panel and the error-rate stat must show
                    assert (await c.get("/api/conversations/not-a-uuid")).status_code >= 400
                    r = await anon.post(
                        "/api/auth/login", json={"username": "admin", "password": "wrong"}
                    )
                    assert r.status_code == 401
                    failing = {
                        "model": "current",
                        "messages": [{"role": "user", "content": "[[sim:fail=500]] hi"}],
                    }
                    r = await c.post("/v1/chat/completions", json=failing)
                    assert r.status_code >= 500, r.text
                    # a switch while the load runs: the switches panel, and vLLM scraped again
                    # once the new server answers on the same port
                    r = await c.post("/api/models/switch", json={"profile_id": "sim-b"})
                    assert r.status_code == 202, r.text
                await wait_until(lambda: model_running("sim-b"), timeout=60, interval=0.1)

                # the model server's own gauges move with the load (seen by Prometheus)
                async def moved(expr: str) -> bool:
                    return any(v > 0 for v in finite_values(await prom.query(http, expr)))

                for expr in (
                    "max_over_time(vllm:num_requests_running[1m])",
                    "max_over_time(vllm:num_requests_waiting[1m])",
                    "max_over_time(vllm:kv_cache_usage_perc[1m])",
                    "increase(vllm:prefix_cache_hits_total[1m])",
                    "increase(vllm:time_to_first_token_seconds_count[1m])",
                    'increase(gateway_model_switches_total{outcome="success"}[5m])',
                    "max_over_time(gateway_active_streams[1m])",
                ):
                    try:
                        await wait_until(lambda e=expr: moved(e), timeout=60, interval=0.5)  # type: ignore[misc]
                    except AssertionError:
                        raise AssertionError(f"never above 0 in Prometheus: {expr}") from None
                # MONITORING_LOAD_S: keep the load running longer (for a fuller dashboard picture)
                await asyncio.sleep(float(os.environ.get("MONITORING_LOAD_S", "0")))

                # every panel has data while the load still runs (a loaded machine scrapes late:
                # a rate over the last minute needs two scrapes of a moving counter)
                queries = dashboard_queries()
                assert len(queries) >= 20
                empty: list[str] = []

                async def all_panels_have_data() -> bool:
                    empty.clear()
                    for title, expr in queries:
                        if not finite_values(await prom.query(http, expr)):
                            empty.append(f"{title}: {expr}")
                    return not empty

                try:
                    await wait_until(all_panels_have_data, timeout=90, interval=1.0)
                except AssertionError:
                    raise AssertionError("panels without data:\n" + "\n".join(empty)) from None
            finally:
                stop.set()
                await load

            # the alert rules load and evaluate in the server too
            r = await http.get(f"{prom.url}/api/v1/rules")
            groups = r.json()["data"]["groups"]
            rules = [rule for g in groups for rule in g["rules"]]
            assert all(rule["health"] == "ok" for rule in rules), rules
            assert {r["name"] for r in rules if r["type"] == "alerting"} >= {"RedisDown"}

            # a picture of the dashboard from these data (Grafana itself cannot run here), in
            # Debian's Chromium as the web UI's end-to-end tests use it
            if not any(map(shutil.which, ("chromium", "chromium-browser"))):
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    await asyncio.to_thread(apt_install, "chromium", "fonts-dejavu-core")
            out = Path(os.environ.get("DASHBOARD_PNG", tmp_path / "dashboard.png"))
            render = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    str(RENDER_SCRIPT),
                    "--prometheus",
                    prom.url,
                    "--minutes",
                    "3",
                    "--out",
                    str(out),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if render.returncode == 3:  # no Chromium: the HTML page is still checked
                assert not IN_CI, render.stderr
            else:
                assert render.returncode == 0, render.stdout + render.stderr
                assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            html = out.with_suffix(".html").read_text()
            assert html.count("<svg") >= 12 and "no data" not in html
