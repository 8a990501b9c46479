"""A server someone else runs at a fixed URL: nothing to start or stop."""

from __future__ import annotations

from app.model_manager.profiles import RuntimeKind
from app.model_manager.runtimes.base import LaunchSpec


class ExternalRuntime:
    kind = RuntimeKind.EXTERNAL

    async def start(self, spec: LaunchSpec) -> None:
        return None

    async def stop(self, timeout_s: float) -> None:
        return None

    async def alive(self) -> bool:
        return True

    def exit_detail(self) -> str | None:
        return None

    async def discover(self) -> str | None:
        return None

    async def adopt(self, spec: LaunchSpec) -> bool:
        return True

    async def log_tail(self, lines: int = 40) -> list[str]:
        return []

    async def close(self, *, stop_server: bool) -> None:
        return None
