"""Model management (SPEC §3 Models, seed 000): status, profiles, recommendations, switch, reload.

Reading is open to every signed-in user (the UI's model selector); switching and reloading are
for admins. Progress of a switch is read from the status.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from pydantic import ConfigDict, Field

from app.api.deps import AdminPrincipal, CurrentPrincipal
from app.model_manager.fleet import Fleet
from app.model_manager.manager import ModelManager
from app.model_manager.profiles import profile_view
from app.schemas.wire import RequestModel

router = APIRouter(prefix="/api/models", tags=["models"])


async def get_model_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.model_manager
    return manager


ManagerDep = Annotated[ModelManager, Depends(get_model_manager)]


async def get_fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]


class SwitchRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    profile_id: str = Field(min_length=1, max_length=100)
    # several models at once: the served profile this one replaces (none: the first member)
    replace: str | None = Field(default=None, min_length=1, max_length=100)


@router.get("/status")
async def model_status(_: CurrentPrincipal, manager: ManagerDep, fleet: FleetDep) -> dict[str, Any]:
    view = await manager.status_view()
    # every model served at once (one member when MODEL_ALSO_SERVE is empty)
    view["members"] = await fleet.members()
    return view


@router.get("/profiles")
async def model_profiles(_: CurrentPrincipal, manager: ManagerDep) -> dict[str, Any]:
    return {
        "profiles": await manager.profile_views(),
        "current_profile": manager.current_profile,
    }


@router.get("/hardware-recommendations")
async def hardware_recommendations(_: CurrentPrincipal, manager: ManagerDep) -> dict[str, Any]:
    return await manager.recommendations()


@router.post("/switch", status_code=status.HTTP_202_ACCEPTED)
async def switch_model(body: SwitchRequest, _: AdminPrincipal, fleet: FleetDep) -> dict[str, Any]:
    record = await fleet.request_switch(body.profile_id, body.replace)
    return {
        "success": True,
        "message": f"switching to {record.target!r}; follow the progress in /api/models/status",
        "status": "switching",
        "target": record.target,
        "previous": record.previous,
    }


@router.post("/reload")
async def reload_profiles(_: AdminPrincipal, fleet: FleetDep) -> dict[str, Any]:
    profiles = await fleet.reload_profiles()  # every member's, in every gateway process
    return {
        "success": True,
        "profiles": {pid: profile_view(pid, p) for pid, p in profiles.items()},
    }
