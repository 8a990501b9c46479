"""`GET /metrics`: Prometheus text, for the allowed networks or a bearer token only."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.config import Settings
from app.core.errors import Forbidden
from app.core.metrics import render

router = APIRouter(tags=["health"])


def _allowed(request: Request, settings: Settings) -> bool:
    if settings.metrics_token:
        header = request.headers.get("authorization", "")
        if hmac.compare_digest(header.encode(), f"Bearer {settings.metrics_token}".encode()):
            return True
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.metrics_allow_networks)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if not _allowed(request, request.app.state.settings):
        raise Forbidden("metrics are not public", code="forbidden")
    body, content_type = render()
    return Response(body, media_type=content_type)
