"""Usage rows (one per chat request), written in batches off the request path."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings


class UsageRecorder:
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], settings: Settings
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
