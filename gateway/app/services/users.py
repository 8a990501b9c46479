"""Admin user management and the accounts that exist at start-up."""

from __future__ import annotations

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.db.models import Role, User
from app.repositories.users import ApiKeyRepository, UserRepository
from app.schemas.auth import CreateUserRequest, UpdateUserRequest
from app.services.auth import AUTH_CHANGED, Principal, hash_password_async

log = structlog.get_logger()


class StartupRefused(RuntimeError):
    """The gateway must not serve in this configuration; the message says how to fix it."""


class UserAdminService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.users = UserRepository(session)

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        return await self.users.page(limit=limit, offset=offset)

    async def create(self, data: CreateUserRequest) -> User:
        if await self.users.exists(data.username, data.email):
            raise Conflict("a user with this username or email already exists")
        user = User(
            username=data.username,
            email=data.email,
            password_hash=await hash_password_async(data.password, self.settings.bcrypt_rounds),
            role=data.role.value,
            requests_per_minute=data.requests_per_minute,
            max_concurrent_streams=data.max_concurrent_streams,
            tokens_per_day=data.tokens_per_day,
        )
        self.users.add(user)
        await self.session.flush()
        log.info("user created", user_id=user.id, role=user.role)
        return user

    async def update(self, actor: Principal, user_id: int, data: UpdateUserRequest) -> User:
        user = await self._get(user_id)
        changes = data.model_dump(exclude_unset=True)
        if changes.get("email") and await self.users.email_taken(
            changes["email"], except_id=user.id
        ):
            raise Conflict("another user has this email")
        loses_admin = user.is_admin and (
            changes.get("role") == Role.USER or changes.get("disabled") is True
        )
        if loses_admin and await self.users.count_active_admins() <= 1:
            raise Conflict("this is the last active admin")
        for field in ("email", "requests_per_minute", "max_concurrent_streams", "tokens_per_day"):
            if field in changes:
                setattr(user, field, changes[field])
        if changes.get("role") is not None:
            user.role = Role(changes["role"]).value
        if changes.get("disabled") is not None:
            user.disabled = bool(changes["disabled"])
        if changes.get("password"):
            user.password_hash = await hash_password_async(
                changes["password"], self.settings.bcrypt_rounds
            )
            # a reset password ends the user's API keys too, as a change of their own does
            await ApiKeyRepository(self.session).revoke_all(user.id)
        if changes.get("password") or changes.get("disabled") or "role" in changes:
            user.token_version += 1
        self.session.info[AUTH_CHANGED] = True
        await self.session.flush()
        log.info("user updated", user_id=user.id, by=actor.user_id, fields=sorted(changes))
        return user

    async def delete(self, actor: Principal, user_id: int) -> None:
        user = await self._get(user_id)
        if user.id == actor.user_id:
            raise Conflict("you cannot delete your own account")
        if user.is_admin and not user.disabled and await self.users.count_active_admins() <= 1:
            raise Conflict("this is the last active admin")
        await self.users.delete(user)
        self.session.info[AUTH_CHANGED] = True
        await self.session.flush()
        log.info("user deleted", user_id=user_id, by=actor.user_id)

    async def _get(self, user_id: int) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound("user not found")
        return user


DEMO_ACCOUNTS = (
    ("admin", "admin123", Role.ADMIN, "admin@example.com"),
    ("test", "test", Role.USER, "test@example.com"),
)


async def ensure_initial_accounts(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Local mode: the demo accounts. Production: the first admin from ADMIN_*, or refuse.
    Workers starting together may race to create them: the one that loses looks again."""
    try:
        await _ensure_initial_accounts(session_factory, settings)
    except IntegrityError:
        log.info("initial accounts were created by another worker meanwhile")
        await _ensure_initial_accounts(session_factory, settings)


async def _ensure_initial_accounts(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with session_factory.begin() as session:
        users = UserRepository(session)
        if settings.seed_demo_accounts:
            for username, password, role, email in DEMO_ACCOUNTS:
                if not await users.exists(username, email):
                    users.add(
                        User(
                            username=username,
                            email=email,
                            role=role.value,
                            password_hash=await hash_password_async(
                                password, settings.bcrypt_rounds
                            ),
                        )
                    )
                    log.warning("demo account created", username=username, role=role.value)
            return
        if settings.admin_password and await users.by_login(settings.admin_username) is None:
            users.add(
                User(
                    username=settings.admin_username,
                    email=settings.admin_email,
                    role=Role.ADMIN.value,
                    password_hash=await hash_password_async(
                        settings.admin_password, settings.bcrypt_rounds
                    ),
                )
            )
            await session.flush()
            log.info("initial admin created", username=settings.admin_username)
        if await users.count_active_admins() == 0:
            raise StartupRefused(
                "refusing to start in production without an admin account: set ADMIN_USERNAME "
                "and ADMIN_PASSWORD, or run `python -m app.cli create-admin`"
            )
