from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.core.security import BCRYPT_MAX_BYTES
from app.db.models import KeyScope, Role

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"


def _check_new_password(value: str) -> str:
    if len(value.encode()) > BCRYPT_MAX_BYTES:
        raise ValueError(f"password must be at most {BCRYPT_MAX_BYTES} bytes")
    return value


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=254, description="username or email")
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds until the token expires")


class VerifyResponse(BaseModel):
    username: str
    role: str
    exp: int | None


class ChangePasswordRequest(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=BCRYPT_MAX_BYTES)

    _check = field_validator("new_password")(_check_new_password)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str | None
    role: str
    disabled: bool
    requests_per_minute: int | None
    max_concurrent_streams: int | None
    tokens_per_day: int | None
    created_at: datetime


class UserList(BaseModel):
    users: list[UserOut]
    total: int


class CreateUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    email: EmailStr | None = None
    password: str = Field(min_length=8, max_length=BCRYPT_MAX_BYTES)
    role: Role = Role.USER
    requests_per_minute: int | None = Field(default=None, ge=0)
    max_concurrent_streams: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)

    _check = field_validator("password")(_check_new_password)


class UpdateUserRequest(BaseModel):
    """PATCH: only the fields sent change; `null` clears a limit override."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    password: str | None = Field(default=None, min_length=8, max_length=BCRYPT_MAX_BYTES)
    role: Role | None = None
    disabled: bool | None = None
    requests_per_minute: int | None = Field(default=None, ge=0)
    max_concurrent_streams: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)

    @field_validator("password")
    @classmethod
    def _password_bytes(cls, value: str | None) -> str | None:
        return None if value is None else _check_new_password(value)


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    scope: KeyScope = Field(
        default=KeyScope.CHAT,
        description="chat: the chat routes, /v1/* and the model list; full: what your role allows",
    )


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    scope: KeyScope


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the secret; shown only once")


class ApiKeyList(BaseModel):
    keys: list[ApiKeyOut]
