from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.api.deps import AuthServiceDep, CurrentPrincipal, LoginThrottleDep, client_ip
from app.schemas.auth import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    ChangePasswordRequest,
    LoginRequest,
    TokenResponse,
    UserOut,
    VerifyResponse,
)

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/login")
async def login(
    body: LoginRequest, request: Request, auth: AuthServiceDep, throttle: LoginThrottleDep
) -> TokenResponse:
    return await auth.login(body.username, body.password, client_ip(request), throttle)


@router.get("/verify")
async def verify(principal: CurrentPrincipal) -> VerifyResponse:
    return VerifyResponse(
        username=principal.username, role=principal.role, exp=principal.expires_at
    )


@router.get("/me")
async def me(principal: CurrentPrincipal, auth: AuthServiceDep) -> UserOut:
    return UserOut.model_validate(await auth.current_user(principal))


@router.post("/change-password")
async def change_password(
    body: ChangePasswordRequest, principal: CurrentPrincipal, auth: AuthServiceDep
) -> TokenResponse:
    return await auth.change_password(principal, body.current_password, body.new_password)


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def create_key(
    body: ApiKeyCreate, principal: CurrentPrincipal, auth: AuthServiceDep
) -> ApiKeyCreated:
    record, secret = await auth.create_api_key(
        principal, body.name, body.expires_in_days, body.scope
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(record).model_dump(), key=secret)


@router.get("/keys")
async def list_keys(principal: CurrentPrincipal, auth: AuthServiceDep) -> ApiKeyList:
    keys = await auth.list_api_keys(principal)
    return ApiKeyList(keys=[ApiKeyOut.model_validate(k) for k in keys])


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(key_id: int, principal: CurrentPrincipal, auth: AuthServiceDep) -> None:
    await auth.revoke_api_key(principal, key_id)
