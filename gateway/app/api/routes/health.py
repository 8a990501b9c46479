from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.services.health import UNHEALTHY, HealthChecker

router = APIRouter(tags=["health"])

SERVICE_NAME = "vLLM Chat Gateway"


def _checker(request: Request) -> HealthChecker:
    checker: HealthChecker = request.app.state.health
    return checker


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    report = await _checker(request).check()
    body: dict[str, Any] = {
        "status": report.status,
        "service": SERVICE_NAME,
        "version": __version__,
        "services": report.services,
    }
    return JSONResponse(body, status_code=503 if report.status == UNHEALTHY else 200)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers: nothing else is checked (a restart would not fix a dependency)."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready to serve: the database answers (Redis and the model are optional)."""
    database = await _checker(request).database()
    ok = database["status"] == "up"
    body = {"status": "ready" if ok else "not_ready", "services": {"database": database}}
    return JSONResponse(body, status_code=200 if ok else 503)
