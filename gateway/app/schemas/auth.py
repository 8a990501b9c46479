from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from app.core.security import BCRYPT_MAX_BYTES
from app.db.models import KeyScope, Role
from app.schemas.wire import (
    ConcurrentStreams,
    RequestModel,
    RequestsPerMinute,
    TokensPerDay,
)

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"


def _check_new_password(value: str) -> str:
    if len(value.encode()) > BCRYPT_MAX_BYTES:
        raise ValueError(f"password must be at most {BCRYPT_MAX_BYTES} bytes")
    return value


class LoginRequest(RequestModel):
    """JSON `{username, password}` or `{email, password}`, or the same fields as an OAuth2
    password form (`application/x-www-form-urlencoded`, `grant_type=password` optional)."""

    model_config = ConfigDict(extra="ignore")  # OAuth2 forms may carry scope, client_id, ...

    username: str | None = Field(
        default=None, min_length=1, max_length=254, description="username or email"
    )
    email: str | None = Field(
        default=None, min_length=1, max_length=254, description="the account's email"
    )
    password: str = Field(min_length=1, max_length=1024)
    grant_type: Literal["password"] | None = Field(
        default=None, description="OAuth2 password grant; only `password`"
    )

    @model_validator(mode="after")
    def _one_login(self) -> LoginRequest:
        if self.username is None and self.email is None:
            raise ValueError("username or email is required")
        both = self.username is not None and self.email is not None
        if both and str(self.username).strip().lower() != str(self.email).strip().lower():
            raise ValueError("give username or email, not two different logins")
        return self

    @property
    def login(self) -> str:
        """The name or email to look the account up by."""
        login = self.username if self.username is not None else self.email
        assert login is not None  # the validator requires one
        return login


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds until the token expires")


class VerifyResponse(BaseModel):
    username: str
    role: str
    exp: int | None


class ChangePasswordRequest(RequestModel):
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


class CreateUserRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    email: EmailStr | None = None
    password: str = Field(min_length=8, max_length=BCRYPT_MAX_BYTES)
    role: Role = Role.USER
    requests_per_minute: RequestsPerMinute | None = None
    max_concurrent_streams: ConcurrentStreams | None = None
    tokens_per_day: TokensPerDay | None = None

    _check = field_validator("password")(_check_new_password)


class UpdateUserRequest(RequestModel):
    """PATCH: only the fields sent change; `null` clears a limit override."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    password: str | None = Field(default=None, min_length=8, max_length=BCRYPT_MAX_BYTES)
    role: Role | None = None
    disabled: bool | None = None
    requests_per_minute: RequestsPerMinute | None = None
    max_concurrent_streams: ConcurrentStreams | None = None
    tokens_per_day: TokensPerDay | None = None

    @field_validator("password")
    @classmethod
    def _password_bytes(cls, value: str | None) -> str | None:
        return None if value is None else _check_new_password(value)


class ApiKeyCreate(RequestModel):
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
