"""MODEL_RUNTIME=external (the Kubernetes path, issue 15): the model servers belong to someone
else, so the gateway serves what runs at VLLM_BASE_URL and refuses every switch with a clear
409 instead of trying to replace a server it does not own (and timing out on it)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import assert_error, bearer, login, sim_get, wait_until

PROFILES = {
    "profiles": {
        # no runtime: MODEL_RUNTIME decides, as the GPU profiles in deploy/k8s do
        "cluster-model": {
            "name": "Served by the cluster",
            "model_id": "simulator-model",
            "cpu_only": True,
        },
        "other-model": {"name": "Another", "model_id": "other", "cpu_only": True},
        "child-process": {
            "name": "A process the gateway could start",
            "model_id": "sim-child",
            "runtime": "process",
            "command": ["{python}", "-c", "raise SystemExit(3)"],
            "cpu_only": True,
        },
    }
}


async def test_switching_is_refused_and_the_served_model_stays(
    start_gateway: Any, simulator: Any, tmp_path: Any
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(PROFILES))
    async with start_gateway(
        model_profiles_path=path, model_default_profile="cluster-model", model_runtime="external"
    ) as gw:
        manager = gw.app.state.model_manager
        await wait_until(lambda: manager.status.value == "running", timeout=30)
        async with gw.client() as c:
            admin = bearer(await login(c, "admin", "admin123"))
            user = bearer(await login(c, "test", "test"))
            for profile_id in ("other-model", "child-process", "cluster-model", "no-such"):
                r = await c.post(
                    "/api/models/switch", json={"profile_id": profile_id}, headers=admin
                )
                err = assert_error(r, 409, "switching_disabled")
                assert "MODEL_RUNTIME=external" in err["message"]
                assert "Kubernetes" in err["message"]
            # a user is still refused as a user, before anything else
            r = await c.post("/api/models/switch", json={"profile_id": "x"}, headers=user)
            assert r.status_code == 403
            status = (await c.get("/api/models/status", headers=user)).json()
            assert status["switching_enabled"] is False
            assert status["status"] == "running"
            assert status["current_profile"] == "cluster-model"
            assert status["switch"] is None and status["history"] == []
            # nothing was stopped or started: chat still reaches the same server
            r = await c.post(
                "/api/chat",
                json={"messages": [{"role": "user", "content": "hi"}], "save": False},
                headers=user,
            )
            assert r.status_code == 200 and "[DONE]" in r.text
            assert (await sim_get(simulator, "/sim/stats"))["last_request"]["model"] == (
                "simulator-model"
            )


async def test_managed_runtimes_still_offer_switching(
    start_gateway: Any, simulator: Any, tmp_path: Any
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(PROFILES))
    async with start_gateway(model_profiles_path=path, model_runtime="process") as gw:
        async with gw.client() as c:
            admin = bearer(await login(c, "admin", "admin123"))
            status = (await c.get("/api/models/status", headers=admin)).json()
            assert status["switching_enabled"] is True
            r = await c.post("/api/models/switch", json={"profile_id": "no-such"}, headers=admin)
            assert_error(r, 404, "profile_not_found")
