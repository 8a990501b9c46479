"""/metrics: the expected samples after known traffic, access control, several workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    GATEWAY_DIR,
    assert_error,
    gateway_env,
    login,
    wait_live,
    wait_until,
)
from tests.ports import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(s: dict[Any, float], name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


async def _scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_samples_after_known_traffic(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(rate_limit_requests_per_minute=4) as gw:
        async with gw.client() as anon:
            before = await _scrape(anon)
            token = await login(anon, "test", "test")
        async with gw.client(token) as c:
            chat = {"model": "current", "messages": [{"role": "user", "content": "hi"}]}
            assert (
                await c.post("/v1/chat/completions", json={**chat, "stream": True})
            ).status_code == 200
            assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200
            assert (
                await c.post("/v1/chat/completions", json={**chat, "temperature": 9})
            ).status_code == 400
            assert (await c.post("/api/chat", json=chat)).status_code == 200
            assert (await c.post("/v1/chat/completions", json=chat)).status_code == 429
        async with gw.client() as anon:
            after = await _scrape(anon)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = "simulator-model"
    assert delta("gateway_chat_requests_total", model=model, client="api", status="200") == 2
    assert delta("gateway_chat_requests_total", model=model, client="ui", status="200") == 1
    assert delta("gateway_chat_requests_total", model=model, client="api", status="400") == 1
    assert delta("gateway_chat_requests_total", model="unknown", client="api", status="429") == 1
    assert delta("gateway_rate_limit_rejections_total", reason="requests_per_minute") == 1
    assert delta("gateway_tokens_total", model=model, direction="output") == 3 * 16
    assert delta("gateway_tokens_total", model=model, direction="input") > 0
    assert delta("gateway_chat_ttft_seconds_count", model=model) == 3
    assert (
        delta(
            "gateway_http_requests_total", route="/v1/chat/completions", method="POST", status="200"
        )
        == 2
    )
    assert (
        delta("gateway_http_requests_total", route="/api/auth/login", method="POST", status="200")
        == 1
    )
    assert delta("gateway_http_request_duration_seconds_count", route="/api/chat") == 1
    assert value(after, "gateway_active_streams") == 0
    assert delta("gateway_usage_rows_dropped_total") == 0
    assert ("gateway_usage_queue_depth", ()) in after


async def test_access_is_restricted(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(metrics_token="scrape-" + "t" * 30) as gw:
        outside = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gw.app, client=("10.20.30.40", 5000)),
            base_url="http://gw",
        )
        async with outside:
            assert_error(await outside.get("/metrics"), 403, "forbidden")
            assert_error(
                await outside.get("/metrics", headers={"Authorization": "Bearer wrong"}), 403
            )
            ok = await outside.get(
                "/metrics", headers={"Authorization": "Bearer scrape-" + "t" * 30}
            )
            assert ok.status_code == 200 and "gateway_http_requests_total" in ok.text
        async with gw.client() as local:  # 127.0.0.1 is in the allowed networks by default
            assert (await local.get("/metrics")).status_code == 200


async def test_counts_add_up_across_two_workers(tmp_path: Path, simulator) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = gateway_env(
        SQLITE_PATH=str(tmp_path / "gw.db"),
        VLLM_BASE_URL=f"{simulator.url}/v1",
        RATE_LIMIT_ENABLED="false",
        TITLE_GENERATION="false",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    log = (tmp_path / "gw.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=GATEWAY_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_live(base, proc)
        # both workers imported the app (each writes its own value files): /metrics must sum them
        await wait_until(lambda: len(list(metrics_dir.glob("counter_*.db"))) == 2, timeout=40)
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            token = await login(c, "test", "test")
        chat = {"model": "current", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(40):  # a new connection each time: both workers take some
            async with httpx.AsyncClient(base_url=base, timeout=10) as c:
                r = await c.post(
                    "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 200
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            scraped = samples((await c.get("/metrics")).text)
        total = value(
            scraped,
            "gateway_chat_requests_total",
            model="simulator-model",
            client="api",
            status="200",
        )
        assert total == 40
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # still two workers, no restart
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
