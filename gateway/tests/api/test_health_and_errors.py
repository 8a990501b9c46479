"""/health, request ids and the error body on routes that do not exist."""

from __future__ import annotations

import httpx


class TestHealth:
    async def test_degraded_when_upstream_is_down(
        self, client: httpx.AsyncClient, settings
    ) -> None:  # type: ignore[no-untyped-def]
        r = await client.get("/health")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "degraded"
        assert body["service"] == "vLLM Chat Gateway" and body["version"] == "1.0.0"
        assert body["services"]["database"]["status"] == "up"
        assert body["services"]["database"]["engine"] in ("sqlite", "postgresql")
        assert body["services"]["vllm"]["status"] == "down"
        assert body["services"]["redis"] == {"status": "not_configured"}

    async def test_live_and_ready(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health/live")).json() == {"status": "alive"}
        r = await client.get("/health/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"


class TestRequestIds:
    async def test_generated_when_absent(self, client: httpx.AsyncClient) -> None:
        a = (await client.get("/health/live")).headers["x-request-id"]
        b = (await client.get("/health/live")).headers["x-request-id"]
        assert a != b and len(a) == 32

    async def test_sane_incoming_id_is_kept_and_insane_one_replaced(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.get("/health/live", headers={"X-Request-ID": "trace-abc.123"})
        assert r.headers["x-request-id"] == "trace-abc.123"
        r = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith<script>"})
        assert r.headers["x-request-id"] != "bad id\twith<script>"


class TestErrorBody:
    async def test_unknown_route(self, client: httpx.AsyncClient) -> None:
        from tests.conftest import assert_error

        assert_error(await client.get("/api/nothing-here"), 404, "not_found")

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        from tests.conftest import assert_error

        assert_error(await client.get("/api/auth/login"), 405, "method_not_allowed")
