"""Authentication: login, bearer tokens and API keys, password changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import Forbidden, NotFound, RateLimited, Unauthorized, ValidationFailed
from app.core.security import (
    InvalidTokenError,
    api_key_matches,
    create_access_token,
    decode_access_token,
    dummy_password_check,
    generate_api_key,
    hash_api_key,
    hash_password,
    looks_like_api_key,
    verify_password,
)
from app.db.base import utcnow
from app.db.models import ApiKey, KeyScope, User
from app.repositories.users import ApiKeyRepository, UserRepository
from app.schemas.auth import TokenResponse
from app.services.login_throttle import LoginThrottle

log = structlog.get_logger()

BAD_CREDENTIALS = "invalid username or password"
# set in a session's `info` by any change that can invalidate resolved credentials
AUTH_CHANGED = "auth_changed"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved once per request from a token, an API key or dev mode."""

    user_id: int
    username: str
    role: str
    via: str  # jwt | api_key | dev
    expires_at: int | None = None
    # the admin's per-user overrides of the rate limits (None: the default from settings)
    requests_per_minute: int | None = None
    max_concurrent_streams: int | None = None
    tokens_per_day: int | None = None
    # an API key's scope (KeyScope); a password login (or dev mode) is "full"
    scope: str = KeyScope.FULL.value

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _principal(
    user: User, via: str, expires_at: int | None = None, scope: str = KeyScope.FULL.value
) -> Principal:
    return Principal(
        user.id,
        user.username,
        user.role,
        via,
        expires_at,
        user.requests_per_minute,
        user.max_concurrent_streams,
        user.tokens_per_day,
        scope,
    )


async def hash_password_async(password: str, rounds: int) -> str:
    # bcrypt at cost 12 is ~0.25 s of CPU: never on the event loop
    return await to_thread.run_sync(hash_password, password, rounds)


async def verify_password_async(password: str, password_hash: str) -> bool:
    return await to_thread.run_sync(verify_password, password, password_hash)


class AuthService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.users = UserRepository(session)
        self.keys = ApiKeyRepository(session)

    # --- login ------------------------------------------------------------------------------
    async def login(
        self, login: str, password: str, client_ip: str, throttle: LoginThrottle
    ) -> TokenResponse:
        wait = await throttle.retry_after(client_ip)
        if wait is not None:
            log.warning("login throttled", client_ip=client_ip)
            headers = {
                "X-RateLimit-Limit": str(self.settings.login_max_failures),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(wait),
            }
            raise RateLimited(
                "too many failed logins, try again later", retry_after_s=wait, headers=headers
            )
        user = await self.users.by_login(login.strip())
        if user is None:
            # same work and same answer as a wrong password: no username probing
            await to_thread.run_sync(dummy_password_check, password, self.settings.bcrypt_rounds)
            ok = False
        else:
            ok = await verify_password_async(password, user.password_hash)
        if user is None or not ok:
            await throttle.record_failure(client_ip)
            log.info("login failed", client_ip=client_ip)
            raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
        if user.disabled:
            raise Forbidden("this account is disabled", code="account_disabled")
        return self.issue_token(user)

    def issue_token(self, user: User) -> TokenResponse:
        lifetime = timedelta(minutes=self.settings.jwt_expire_minutes)
        token, _ = create_access_token(
            username=user.username,
            user_id=user.id,
            role=user.role,
            version=user.token_version,
            secret=self.settings.jwt_secret,
            lifetime=lifetime,
        )
        return TokenResponse(access_token=token, expires_in=int(lifetime.total_seconds()))

    # --- resolving credentials ------------------------------------------------------------------
    async def authenticate(self, credential: str) -> Principal:
        if looks_like_api_key(credential):
            return await self._authenticate_api_key(credential)
        try:
            claims = decode_access_token(credential, self.settings.jwt_secret)
        except InvalidTokenError as exc:
            raise Unauthorized(str(exc), code="invalid_token") from exc
        user = await self.users.get(claims.user_id)
        if user is None or user.username != claims.username:
            raise Unauthorized("user no longer exists", code="invalid_token")
        if user.disabled:
            raise Unauthorized("this account is disabled", code="account_disabled")
        if claims.version != user.token_version:
            raise Unauthorized("token was revoked, log in again", code="invalid_token")
        return _principal(user, "jwt", claims.expires_at)

    async def _authenticate_api_key(self, key: str) -> Principal:
        digest = hash_api_key(key)
        record = await self.keys.by_hash(digest)
        if record is None or not api_key_matches(key, record.key_hash):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        now = utcnow()
        if record.revoked_at is not None or (
            record.expires_at is not None and record.expires_at <= now
        ):
            raise Unauthorized("API key revoked or expired", code="invalid_api_key")
        user = await self.users.get(record.user_id)
        if user is None or user.disabled:
            raise Unauthorized("API key owner is disabled", code="account_disabled")
        # one write per minute at most: last-used is informative, not worth a write per call
        if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
            record.last_used_at = now
        return _principal(user, "api_key", scope=record.scope)

    async def dev_principal(self) -> Principal:
        admin = await self.users.first_active_admin()
        if admin is None:
            raise Unauthorized("development mode: no admin account to act as")
        return _principal(admin, "dev")

    # --- the caller's own account -------------------------------------------------------------
    async def current_user(self, principal: Principal) -> User:
        user = await self.users.get(principal.user_id)
        if user is None:
            raise Unauthorized("user no longer exists", code="invalid_token")
        return user

    async def change_password(self, principal: Principal, current: str, new: str) -> TokenResponse:
        user = await self.current_user(principal)
        if not await verify_password_async(current, user.password_hash):
            raise ValidationFailed("current password is wrong", code="invalid_credentials")
        if current == new:
            raise ValidationFailed("the new password must differ from the current one")
        user.password_hash = await hash_password_async(new, self.settings.bcrypt_rounds)
        # every token issued so far stops working; the caller gets a fresh one
        user.token_version += 1
        # and every API key: one minted by whoever knew the old password must not outlive it
        revoked = await self.keys.revoke_all(user.id)
        self.session.info[AUTH_CHANGED] = True
        await self.session.flush()
        log.info("password changed", user_id=user.id, api_keys_revoked=revoked)
        return self.issue_token(user)

    # --- API keys ----------------------------------------------------------------------------
    @staticmethod
    def require_password_login(principal: Principal) -> None:
        """Keys are made, listed and revoked with a password login only: a key that could mint
        keys would let a stolen key outlive its revocation."""
        if principal.via == "api_key":
            raise Forbidden(
                "API keys are managed with a password login, not with an API key",
                code="password_login_required",
            )

    async def create_api_key(
        self,
        principal: Principal,
        name: str,
        expires_in_days: int | None,
        scope: KeyScope = KeyScope.CHAT,
    ) -> tuple[ApiKey, str]:
        self.require_password_login(principal)
        secret = generate_api_key()
        expires_at = (
            datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        )
        record = ApiKey(
            user_id=principal.user_id,
            name=name,
            prefix=secret[:10],
            key_hash=hash_api_key(secret),
            expires_at=expires_at,
            scope=scope.value,
        )
        self.keys.add(record)
        await self.session.flush()
        log.info("api key created", user_id=principal.user_id, key_id=record.id, scope=scope.value)
        return record, secret

    async def list_api_keys(self, principal: Principal) -> list[ApiKey]:
        self.require_password_login(principal)
        return await self.keys.for_user(principal.user_id)

    async def revoke_api_key(self, principal: Principal, key_id: int) -> None:
        self.require_password_login(principal)
        record = await self.keys.owned(key_id, principal.user_id)
        if record is None:
            raise NotFound("API key not found")
        if record.revoked_at is None:
            record.revoked_at = utcnow()
            self.session.info[AUTH_CHANGED] = True
        log.info("api key revoked", user_id=principal.user_id, key_id=key_id)
