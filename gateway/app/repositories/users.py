"""Queries on users and API keys. No commits here: the request's session owns the transaction."""

from __future__ import annotations

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import ApiKey, Role, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int) -> User | None:
        return await self.session.get(User, user_id)

    async def by_login(self, login: str) -> User | None:
        """A user by username, or by email (case-insensitive) when the login contains '@'."""
        if "@" in login:
            stmt = select(User).where(func.lower(User.email) == login.lower())
        else:
            stmt = select(User).where(User.username == login)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def exists(self, username: str, email: str | None) -> bool:
        # usernames differing only in case would be look-alike accounts: one of them is enough
        conds = [func.lower(User.username) == username.lower()]
        if email:
            conds.append(func.lower(User.email) == email.lower())
        stmt = select(User.id).where(or_(*conds)).limit(1)
        return (await self.session.execute(stmt)).first() is not None

    async def email_taken(self, email: str, *, except_id: int) -> bool:
        stmt = select(User.id).where(func.lower(User.email) == email.lower(), User.id != except_id)
        return (await self.session.execute(stmt.limit(1))).first() is not None

    async def page(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        total = (await self.session.execute(select(func.count(User.id)))).scalar_one()
        stmt = select(User).order_by(User.id).limit(limit).offset(offset)
        return list((await self.session.execute(stmt)).scalars()), total

    async def count_active_admins(self) -> int:
        stmt = select(func.count(User.id)).where(
            User.role == Role.ADMIN.value, User.disabled.is_(False)
        )
        return (await self.session.execute(stmt)).scalar_one()

    async def first_active_admin(self) -> User | None:
        stmt = (
            select(User)
            .where(User.role == Role.ADMIN.value, User.disabled.is_(False))
            .order_by(User.id)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, user: User) -> None:
        self.session.add(user)

    async def delete(self, user: User) -> None:
        await self.session.delete(user)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.key_hash == key_hash)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def for_user(self, user_id: int) -> list[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
        return list((await self.session.execute(stmt)).scalars())

    async def owned(self, key_id: int, user_id: int) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def revoke_all(self, user_id: int) -> int:
        """Revoke every live key of this user; how many were."""
        stmt = (
            update(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)
