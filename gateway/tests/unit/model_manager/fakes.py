"""A fake runtime and a fake upstream for unit tests of the model manager's state machine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from app.core.config import Settings
from app.model_manager.profiles import RuntimeKind
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec

PROFILES: dict[str, Any] = {
    name: {"name": name, "model_id": f"m-{name}", "cpu_only": True, "runtime": "process"}
    for name in ("a", "b", "c")
}


class FakeRuntime:
    """Implements the Runtime Protocol in memory. `serving` is the served model name once the
    server "loaded"; a test crashes it (`crash()`), slows its start (`load_delay_s`), makes a
    profile fail (`fail`), or holds `log_tail` (`hold_log_tail`)."""

    kind = RuntimeKind.PROCESS

    def __init__(self) -> None:
        self.starts: list[str] = []
        self.stops = 0
        self.running: str | None = None  # profile id of the live server
        self.serving: str | None = None  # served name once loaded
        self.load_delay_s: dict[str, float] = {}
        self.fail: set[str] = set()
        self.refuse: set[str] = set()
        # a test holds a call (by name: "alive", "log_tail") until it sets the event
        self.hold: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {
            "alive": asyncio.Event(),
            "log_tail": asyncio.Event(),
        }
        self._loader: asyncio.Task[None] | None = None
        self._exit: str | None = None
        self.closed_stopping: bool | None = None

    async def start(self, spec: LaunchSpec) -> None:
        self.starts.append(spec.profile_id)
        if spec.profile_id in self.refuse:
            raise LaunchFailed(f"refused {spec.profile_id}")
        self.running, self.serving, self._exit = spec.profile_id, None, None
        if spec.profile_id in self.fail:
            return  # alive, never ready
        delay = self.load_delay_s.get(spec.profile_id, 0.0)
        name = spec.profile.served_name

        async def load() -> None:
            await asyncio.sleep(delay)
            if self.running == spec.profile_id:
                self.serving = name

        self._loader = asyncio.get_running_loop().create_task(load())

    async def stop(self, timeout_s: float) -> None:
        self.stops += 1
        self.running = self.serving = None

    def crash(self) -> None:
        self.running = self.serving = None
        self._exit = "exited with code 1"

    async def _held(self, name: str) -> None:
        event = self.hold.get(name)
        if event is not None:
            self.entered[name].set()
            await event.wait()

    async def alive(self) -> bool:
        if self.running is None:
            await self._held("alive")
        return self.running is not None

    def exit_detail(self) -> str | None:
        return self._exit

    async def discover(self) -> str | None:
        return self.running  # the one "machine": any manager finds what runs there

    async def adopt(self, spec: LaunchSpec) -> bool:
        return self.running == spec.profile_id

    async def log_tail(self, lines: int = 40) -> list[str]:
        await self._held("log_tail")
        return ["fake log line"]

    async def close(self, *, stop_server: bool) -> None:
        self.closed_stopping = stop_server
        if self._loader is not None:
            self._loader.cancel()


class FakeCoordinator:
    """A lease a test hands out and takes away (`acting`); `check_fence` refuses runtime
    actions once it is gone, as the real ones do."""

    def __init__(self, *, acting: bool = True) -> None:
        self.node_id = "fake"
        self.is_acting = acting
        self.published: list[dict[str, Any]] = []

    @property
    def acting(self) -> bool:
        return self.is_acting

    async def start(self, manager: Any) -> None:
        if self.is_acting:
            await manager.on_elected(None)

    async def stop(self) -> None:
        pass

    def publish(self, snapshot: dict[str, Any]) -> None:
        self.published.append(snapshot)

    def check_fence(self) -> None:
        from app.model_manager.state import StaleOperation

        if not self.is_acting:
            raise StaleOperation("lease lost")

    async def forward(self, op: str, profile_id: str = "") -> dict[str, Any]:
        raise AssertionError("not forwarded in unit tests")

    async def remote_pending(self, switch_key: str) -> int:
        return 0

    async def others_alive(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"mode": "fake", "node": self.node_id, "leader": None, "fence": None}


class FakeUpstream:
    """The parts of UpstreamClient the manager uses; readiness follows the fake runtime."""

    def __init__(self, runtime: FakeRuntime, base_url: str) -> None:
        self.runtime = runtime
        self.base_url = base_url.rstrip("/")
        self.profile_names: Any = tuple
        self.serving_profile: Any = lambda: None

    def retarget(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def forget_models(self) -> None:
        pass

    async def renew_pool(self) -> None:
        pass

    pool: Any = None

    async def use_pool(self, base_urls: list[str] | None) -> None:
        pass

    async def probe(self, url: str, timeout_s: float = 2.0) -> bool:
        return self.runtime.serving is not None

    async def get_json(self, url: str, timeout_s: float = 2.0) -> Any | None:
        if url.endswith("/models"):
            served = self.runtime.serving
            return {"data": [{"id": served}] if served else []}
        if url.endswith("/version"):
            return {"version": "fake"}
        return None


def fake_settings(tmp_path: Path, **overrides: Any) -> Settings:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": PROFILES}))
    values: dict[str, Any] = {
        "sqlite_path": tmp_path / "unused.db",
        "jwt_secret": "x" * 48,
        "environment": "local",
        "redis_url": None,
        "vllm_base_url": "http://127.0.0.1:9/v1",
        "model_profiles_path": path,
        "model_default_profile": "a",
        "model_runtime": "process",
        "model_log_dir": tmp_path / "logs",
        "model_stop_timeout_s": 1,
        "model_ready_timeout_s": 2,
        "gpu_probe": "none",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)
