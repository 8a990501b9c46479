"""Shared dependencies as `Annotated` aliases, so routes read like their signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import DatabaseUnavailable, Forbidden, Unauthorized, is_database_outage
from app.core.middleware import log_fields
from app.db.models import KeyScope
from app.services.auth import AUTH_CHANGED, AuthService, Principal
from app.services.login_throttle import LoginThrottle
from app.services.principal_cache import PrincipalCache
from app.services.users import UserAdminService


# Every dependency is `async def`: FastAPI runs a plain `def` one in the thread pool, a thread
# hop per request that costs more than the dependency itself.
async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; only this dependency commits or rolls back.

    Declared with scope="function", so the commit happens before the response is sent and a
    failed commit is the client's error response, not a silent loss.
    """
    factory = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
            await session.commit()
            if session.info.get(AUTH_CHANGED):
                request.app.state.principal_cache.clear()
        except Exception as exc:
            await session.rollback()
            if is_database_outage(exc):
                raise DatabaseUnavailable() from exc
            raise


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_auth_service(session: SessionDep, settings: SettingsDep) -> AuthService:
    return AuthService(session, settings)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise Unauthorized("malformed Authorization header, expected 'Bearer <token>'")
    return credential


async def get_principal(request: Request) -> Principal:
    """The caller, from the principal cache when possible (no database work on the hot path)."""
    settings: Settings = request.app.state.settings
    credential = _bearer(request)
    if credential is None and not settings.development_mode:
        raise Unauthorized()
    cache: PrincipalCache = request.app.state.principal_cache

    async def load() -> Principal:
        async with request.app.state.session_factory() as session:
            try:
                auth = AuthService(session, settings)
                if credential is None:
                    principal = await auth.dev_principal()
                else:
                    principal = await auth.authenticate(credential)
                await session.commit()  # an API key's last-used time
                return principal
            except Exception as exc:
                if is_database_outage(exc):
                    raise DatabaseUnavailable() from exc
                raise

    principal = await cache.resolve(credential or "<development-mode>", load)
    log_fields(request)["user_id"] = principal.user_id
    if principal.scope != KeyScope.FULL and not chat_scope_allows(request):
        raise Forbidden(
            "this API key is limited to chat (the chat routes, /v1/* and the model list); "
            "make a key with scope 'full' for more",
            code="insufficient_scope",
        )
    return principal


# What a `chat` API key may call (method, route template); deny by default, so a route added
# later is never open to such keys by accident. /v1/* is the OpenAI-compatible surface.
CHAT_SCOPE_ROUTES = frozenset(
    {
        ("POST", "/api/chat"),
        ("GET", "/api/models"),
        ("GET", "/api/auth/verify"),
    }
)


def chat_scope_allows(request: Request) -> bool:
    route = request.scope.get("route")
    # the route's template (never the raw path); the relay endpoints (api/routes/chat.py) are
    # plain Starlette routes without parameters, whose raw path is their template
    path = getattr(route, "path", None) or request.scope["path"]
    return path.startswith("/v1/") or (request.method, path) in CHAT_SCOPE_ROUTES


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]


async def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


async def get_user_admin(session: SessionDep, settings: SettingsDep) -> UserAdminService:
    return UserAdminService(session, settings)


UserAdminDep = Annotated[UserAdminService, Depends(get_user_admin)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
