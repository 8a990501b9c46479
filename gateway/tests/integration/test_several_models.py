"""Two profiles served at once (issue 15, item 3): real simulator processes started by the
process runtime, one per member of the set, each answering by its own name through `/api/chat`
and `/v1`; a switch replaces one member and leaves the other serving."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.main import create_app
from tests.conftest import LiveGateway, assert_error, bearer, make_settings, read_sse, wait_until
from tests.integration.test_model_switching import PROFILES, SIM, chat_once
from tests.ports import _bindable, free_port

PROFILES_AT_ONCE: dict[str, Any] = {
    **PROFILES,
    "simulator-c": {**PROFILES["simulator"], "name": "Simulator C", "model_id": "sim-c"},
}
# answers of about 1.5 s, so a switch finds some running on the member it replaces
PROFILES_AT_ONCE["simulator-alt"] = {
    **PROFILES["simulator-alt"],
    "aliases": ["coder"],
    "command": [*SIM, "--ttft-ms", "20", "--itl-ms", "50", "--tokens", "30"],
}


def two_free_ports() -> int:
    """A port whose next one is free too (member n listens on VLLM_BASE_URL's port + n)."""
    while True:
        port = free_port()
        if _bindable(port + 1):
            return port


class Fleet:
    def __init__(self, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
        self.client = client
        self.admin = admin

    async def status(self) -> dict[str, Any]:
        r = await self.client.get("/api/models/status")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def members(self) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = (await self.status())["members"]
        return members

    async def serving(self, *profiles: str, timeout: float = 30) -> list[dict[str, Any]]:
        async def ok() -> list[dict[str, Any]] | None:
            members = await self.members()
            now = [(m["profile"], m["status"]) for m in members]
            return members if now == [(p, "running") for p in profiles] else None

        try:
            result: list[dict[str, Any]] = await wait_until(ok, timeout=timeout, interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await self.members()}") from None
        return result

    async def switch(self, profile_id: str, replace: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"profile_id": profile_id}
        if replace is not None:
            body["replace"] = replace
        return await self.client.post("/api/models/switch", json=body, headers=self.admin)


@contextlib.asynccontextmanager
async def two_at_once(tmp_path: Path) -> AsyncIterator[Fleet]:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": PROFILES_AT_ONCE}))
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        tmp_path,
        vllm_base_url=f"http://127.0.0.1:{two_free_ports()}/v1",
        model_profiles_path=path,
        model_default_profile="simulator",
        model_also_serve=["simulator-alt"],
        model_log_dir=tmp_path / "model-logs",
        model_stop_timeout_s=5,
        title_generation=False,
        gpu_probe="none",
        rate_limit_enabled=False,
    )
    async with LiveGateway(create_app(settings), free_port()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            tokens = {}
            for name, password in (("admin", "admin123"), ("test", "test")):
                r = await client.post(
                    "/api/auth/login", json={"username": name, "password": password}
                )
                tokens[name] = r.json()["access_token"]
            client.headers.update(bearer(tokens["test"]))
            yield Fleet(client, bearer(tokens["admin"]))


async def v1_model(client: httpx.AsyncClient, model: str) -> tuple[int, str | None]:
    """One streamed /v1 answer for `model`: (status, the model the events name)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.json()["error"].get("code")
        events = await read_sse(r)
    assert events[-1] == "[DONE]"
    models = {e["model"] for e in events if isinstance(e, dict)}
    assert len(models) == 1, events
    return 200, models.pop()


async def server_requests(member: dict[str, Any]) -> int:
    root = member["base_url"].removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=5) as c:
        return int((await c.get("/sim/stats")).json()["requests_total"])


async def test_two_profiles_each_answer_by_their_own_name(tmp_path: Path) -> None:
    async with two_at_once(tmp_path) as fleet:
        members = await fleet.serving("simulator", "simulator-alt")
        assert members[0]["base_url"] != members[1]["base_url"]  # two servers, two ports

        r = await fleet.client.get("/v1/models")
        assert [m["id"] for m in r.json()["data"]] == ["sim-a", "sim-b"]
        r = await fleet.client.get("/api/models")
        assert [m["id"] for m in r.json()["models"]] == ["sim-a", "sim-b"]
        r = await fleet.client.get("/v1/models/coder")
        assert r.json()["id"] == "sim-b"

        # /v1: the served id, the profile id and an alias each reach their own server
        for name, served in [
            ("sim-a", "sim-a"),
            ("simulator", "sim-a"),
            ("sim-b", "sim-b"),
            ("simulator-alt", "sim-b"),
            ("coder", "sim-b"),
            ("current", "sim-a"),  # the first member
        ]:
            assert await v1_model(fleet.client, name) == (200, served), name
        assert await v1_model(fleet.client, "nope") == (404, "model_not_found")

        # /api/chat names the model too; the request reaches that member's server
        before = [await server_requests(m) for m in members]
        for model in ("sim-b", "sim-b", "sim-a"):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            async with fleet.client.stream("POST", "/api/chat", json=body) as r:
                assert r.status_code == 200
                events = await read_sse(r)
            assert events[-1] == "[DONE]"
        after = [await server_requests(m) for m in members]
        assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2]

        # usage rows name the profile that served them (rows are written in batches)
        async def profiles_in_usage() -> set[str] | None:
            r = await fleet.client.get("/api/usage/export.csv")
            found = {row["profile"] for row in csv.DictReader(io.StringIO(r.text))}
            return found if {"simulator", "simulator-alt"} <= found else None

        await wait_until(profiles_in_usage, timeout=10)

        # a reload re-reads the file for every member, and keeps it when a served one is gone
        r = await fleet.client.post("/api/models/reload", headers=fleet.admin)
        assert r.status_code == 200, r.text
        path = tmp_path / "profiles.yaml"
        without_b = {k: v for k, v in PROFILES_AT_ONCE.items() if k != "simulator-alt"}
        path.write_text(yaml.safe_dump({"profiles": without_b}))
        r = await fleet.client.post("/api/models/reload", headers=fleet.admin)
        assert_error(r, 422, "invalid_profiles")
        assert "simulator-alt" in r.json()["error"]["message"]
        assert await v1_model(fleet.client, "coder") == (200, "sim-b")


async def test_a_switch_replaces_one_member_and_the_other_keeps_serving(tmp_path: Path) -> None:
    async with two_at_once(tmp_path) as fleet:
        await fleet.serving("simulator", "simulator-alt")
        assert_error(await fleet.switch("simulator-c", replace="nope"), 404, "profile_not_served")
        assert_error(
            await fleet.switch("simulator", replace="simulator-alt"), 409, "already_served"
        )

        results: Counter[Any] = Counter()
        stop = asyncio.Event()

        async def chat_a() -> None:
            while not stop.is_set():
                outcome, model = await chat_once(fleet.client, {})
                results[(outcome, model if outcome == "ok" else str(model)[:80])] += 1

        workers = [asyncio.create_task(chat_a()) for _ in range(3)]
        # answers running on the member about to be replaced finish on it (the switch drains)
        on_b = [asyncio.create_task(v1_model(fleet.client, "coder")) for _ in range(3)]

        async def b_running() -> bool:
            return bool((await fleet.members())[1]["in_flight"] == 3)

        await wait_until(b_running, timeout=10, interval=0.01)
        try:
            r = await fleet.switch("simulator-c", replace="simulator-alt")
            assert r.status_code == 202, r.text
            assert r.json()["target"] == "simulator-c"
            # while member 1 is replaced its old name waits or gets 503, never another model
            status, code = await v1_model(fleet.client, "sim-b")
            assert (status, code) in ((503, "model_switching"), (404, "model_not_found")), code
            await fleet.serving("simulator", "simulator-c")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert [await t for t in on_b] == [(200, "sim-b")] * 3
        # member 0 answered all along: no request to it failed or waited out the switch
        assert set(results) == {("ok", "sim-a")}, results
        assert sum(results.values()) >= 3

        r = await fleet.client.get("/v1/models")
        assert [m["id"] for m in r.json()["data"]] == ["sim-a", "sim-c"]
        assert await v1_model(fleet.client, "sim-c") == (200, "sim-c")
        assert await v1_model(fleet.client, "sim-b") == (404, "model_not_found")
        assert await v1_model(fleet.client, "sim-a") == (200, "sim-a")

        # a switch without `replace` replaces the first member, as with one model
        r = await fleet.switch("simulator-alt")
        assert r.status_code == 202, r.text
        await fleet.serving("simulator-alt", "simulator-c")
        assert await v1_model(fleet.client, "coder") == (200, "sim-b")
        assert await v1_model(fleet.client, "sim-c") == (200, "sim-c")
