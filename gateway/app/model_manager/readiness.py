"""Readiness: is a started server answering with the profile's model yet?"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from app.model_manager.profiles import ModelProfile
from app.model_manager.runtimes.base import Runtime


@dataclass(frozen=True)
class Readiness:
    ok: bool
    error: str | None = None
    version: str | None = None


class Probes(Protocol):
    async def probe(self, url: str, timeout_s: float = 2.0) -> bool: ...

    async def get_json(self, url: str, timeout_s: float = 2.0) -> Any | None: ...


async def wait_ready(
    probes: Probes,
    runtime: Runtime,
    profile: ModelProfile,
    base_urls: list[str],
    timeout_s: float,
    interval_s: float = 0.2,
) -> Readiness:
    """Poll `/health` and `/v1/models` until the profile's model answers (a pool: any of its
    instances), or fail early when the server exits, or at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if not await runtime.alive():
            return Readiness(False, f"the server stopped while loading: {runtime.exit_detail()}")
        for base_url in base_urls:
            base = base_url.rstrip("/")
            root = base.removesuffix("/v1")
            if not await probes.probe(f"{root}/health"):
                continue
            models = await probes.get_json(f"{base}/models")
            ids = [m.get("id") for m in (models or {}).get("data", []) if isinstance(m, dict)]
            if profile.served_name in ids:
                version = await probes.get_json(f"{root}/version")
                return Readiness(
                    True, version=str(version.get("version")) if isinstance(version, dict) else None
                )
        if loop.time() >= deadline:
            return Readiness(False, f"the server did not become ready within {timeout_s:g}s")
        await asyncio.sleep(interval_s)
