from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import AuthServiceDep, CurrentPrincipal, LoginThrottleDep, client_ip
from app.core.errors import AppError, ValidationFailed
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
from app.schemas.wire import RowIdPath
from app.services.chat_request import parse_json_object

router = APIRouter(prefix="/api/auth", tags=["auth"])


_FORM = "application/x-www-form-urlencoded"
_LOGIN_SCHEMA = LoginRequest.model_json_schema()


class UnsupportedMediaType(AppError):
    status_code, code = 415, "unsupported_media_type"


async def login_credentials(request: Request) -> LoginRequest:
    """The login body as JSON (the UI, API clients) or an OAuth2 password form (k6 scripts,
    OAuth2 clients); both are validated by the one `LoginRequest`."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    data: dict[str, Any]
    if media_type == _FORM:
        try:
            data = dict(parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError as exc:
            raise ValidationFailed("body: not a valid URL-encoded UTF-8 form") from exc
    elif media_type in ("", "application/json") or media_type.endswith("+json"):
        data = parse_json_object(raw)
    else:
        raise UnsupportedMediaType(f"send the login as application/json or {_FORM}")
    try:
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


@router.post(
    "/login",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _LOGIN_SCHEMA},
                _FORM: {"schema": _LOGIN_SCHEMA},
            },
        }
    },
)
async def login(
    body: Annotated[LoginRequest, Depends(login_credentials)],
    request: Request,
    auth: AuthServiceDep,
    throttle: LoginThrottleDep,
) -> TokenResponse:
    return await auth.login(body.login, body.password, client_ip(request), throttle)


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
async def revoke_key(key_id: RowIdPath, principal: CurrentPrincipal, auth: AuthServiceDep) -> None:
    await auth.revoke_api_key(principal, key_id)
