from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.api.deps import CurrentPrincipal, SessionDep
from app.schemas.conversations import UserSettingsIn, UserSettingsOut
from app.services.conversations import UserSettingsService

router = APIRouter(prefix="/api/users/me/settings", tags=["settings"])


async def get_user_settings_service(session: SessionDep) -> UserSettingsService:
    return UserSettingsService(session)


UserSettingsServiceDep = Annotated[UserSettingsService, Depends(get_user_settings_service)]


@router.get("")
async def get_settings(
    principal: CurrentPrincipal, settings: UserSettingsServiceDep
) -> UserSettingsOut:
    return await settings.get(principal.user_id)


@router.put("")
async def replace_settings(
    body: UserSettingsIn, principal: CurrentPrincipal, settings: UserSettingsServiceDep
) -> UserSettingsOut:
    return await settings.replace(principal.user_id, body)
