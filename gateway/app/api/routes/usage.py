"""Usage reports (own and, for admins, everyone's) and the streamed CSV export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from app.api.deps import AdminPrincipal, CurrentPrincipal, SessionDep
from app.schemas.usage import AdminUsageQuery, UsageExportQuery, UsageQuery, UsageReport
from app.services.usage import UsageExporter, UsageService

router = APIRouter(tags=["usage"])


async def get_usage_service(session: SessionDep) -> UsageService:
    return UsageService(session)


async def get_usage_exporter(request: Request) -> UsageExporter:
    # the body outlives the request's session: the exporter opens its own from the factory
    return UsageExporter(request.app.state.session_factory)


UsageServiceDep = Annotated[UsageService, Depends(get_usage_service)]
UsageExporterDep = Annotated[UsageExporter, Depends(get_usage_exporter)]


@router.get("/api/usage")
async def my_usage(
    principal: CurrentPrincipal, query: Annotated[UsageQuery, Query()], usage: UsageServiceDep
) -> UsageReport:
    return await usage.report(query, query.group_by, user_id=principal.user_id)


@router.get("/api/admin/usage", tags=["admin"])
async def all_usage(
    _: AdminPrincipal, query: Annotated[AdminUsageQuery, Query()], usage: UsageServiceDep
) -> UsageReport:
    return await usage.report(query, query.group_by, user_id=query.user_id)


@router.get(
    "/api/usage/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "one line per usage row"}},
)
async def export_usage(
    principal: CurrentPrincipal,
    query: Annotated[UsageExportQuery, Query()],
    exporter: UsageExporterDep,
) -> StreamingResponse:
    export = await exporter.open(principal, query)
    return StreamingResponse(
        export.chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )
