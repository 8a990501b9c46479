"""A short-lived, in-process cache of resolved credentials.

Resolving a bearer token costs a signature check and a database read; on the chat hot path that
read would dominate. A credential's Principal is kept for `AUTH_CACHE_TTL_S` (never past the
token's own expiry). Any change to accounts or keys committed by this process clears the cache
at once; another gateway process sees it within the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.services.auth import Principal

MAX_ENTRIES = 50_000


class PrincipalCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    def get(self, credential: str) -> Principal | None:
        entry = self._entries.get(credential)
        if entry is None:
            return None
        principal, expires = entry
        if time.monotonic() >= expires or (
            principal.expires_at is not None and time.time() >= principal.expires_at
        ):
            self._entries.pop(credential, None)
            return None
        return principal

    async def resolve(self, credential: str, load: Callable[[], Awaitable[Principal]]) -> Principal:
        """The cached Principal, or `load()` it, once for all callers asking at the same time.

        Without this, a burst of requests on a cold cache (a load test starting, a restart under
        traffic) sends one database lookup per request and exhausts the connection pool.
        """
        principal = self.get(credential)
        if principal is not None:
            return principal
        pending = self._inflight.get(credential)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[credential] = future
        try:
            principal = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        else:
            future.set_result(principal)
            self.put(credential, principal)
            return principal
        finally:
            del self._inflight[credential]

    def put(self, credential: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[credential] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()
