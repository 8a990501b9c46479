"""Dependency checks for /health: the database is required, Redis and the upstream optional."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


@dataclass
class HealthReport:
    status: str
    services: dict[str, dict[str, Any]] = field(default_factory=dict)


async def _timed(check: Any, limit_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        detail = await asyncio.wait_for(check, limit_s)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {limit_s:g}s"}
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    result: dict[str, Any] = {
        "status": "up",
        "latency_ms": round((loop.time() - started) * 1000, 1),
    }
    if isinstance(detail, dict):
        result.update(detail)
    return result


class HealthChecker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_s: float,
        redis: Any | None = None,
        upstream_url: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.redis = redis
        self.upstream_url = upstream_url
        self.http = http
        # a pool (several instances of the model): their state, instead of one URL's /health
        self.pool_view: Callable[[], list[dict[str, Any]] | None] = lambda: None

    def retarget(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url

    async def database(self) -> dict[str, Any]:
        async def check() -> dict[str, Any]:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return {"engine": self.engine.dialect.name}

        result = await _timed(check(), self.timeout_s)
        result.setdefault("engine", self.engine.dialect.name)
        return result

    async def check(self) -> HealthReport:
        names = ["database"]
        checks = [self.database()]
        if self.redis is not None:
            names.append("redis")
            checks.append(_timed(self.redis.ping(), self.timeout_s))
        if self.upstream_url and self.http is not None:
            names.append("vllm")
            checks.append(_timed(self._upstream(), self.timeout_s))
        results = dict(zip(names, await asyncio.gather(*checks), strict=True))
        if results["database"]["status"] != "up":
            status = UNHEALTHY
        elif any(r["status"] != "up" for r in results.values()):
            status = DEGRADED
        else:
            status = HEALTHY
        if self.redis is None:
            results["redis"] = {"status": "not_configured"}
        if "vllm" not in results:
            results["vllm"] = {"status": "not_configured"}
        return HealthReport(status, results)

    async def _upstream(self) -> dict[str, Any]:
        assert self.http is not None and self.upstream_url is not None
        pool = self.pool_view()
        if pool is not None:  # the pool probes its instances itself: up while one answers
            healthy = sum(1 for i in pool if i["healthy"])
            if not healthy:
                raise RuntimeError(f"none of the {len(pool)} instances answers")
            return {"instances": len(pool), "healthy_instances": healthy}
        base = self.upstream_url.rstrip("/").removesuffix("/v1")
        response = await self.http.get(f"{base}/health")
        if response.status_code != 200:
            raise RuntimeError(f"upstream /health answered {response.status_code}")
        return {"url": base}
