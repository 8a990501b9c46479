"""A short-lived, in-process cache of resolved credentials.

Resolving a bearer token costs a signature check and a database read; on the chat hot path that
read would dominate. A credential's Principal is kept for `AUTH_CACHE_TTL_S` (never past the
token's own expiry). Any change to accounts or keys committed by this process clears the cache
at once; another gateway process sees it within the TTL.

During a database outage (the lookup raises DatabaseUnavailable) a credential resolved within
the last `AUTH_CACHE_TTL_S + AUTH_OUTAGE_GRACE_S` seconds is still served: a database blip (a
restart, a failover) then does not refuse every request of users who were just working, and
what needs the database still answers 503 on its own. The cost: a credential revoked by
another gateway process just before the outage may work up to the grace longer (revocations
committed by this process clear the cache, stale entries included, and nothing can be revoked
while the database is down). `AUTH_OUTAGE_GRACE_S=0` turns this off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from app.core.errors import DatabaseUnavailable
from app.services.auth import Principal

log = structlog.get_logger()

MAX_ENTRIES = 50_000


class PrincipalCache:
    def __init__(self, ttl_s: float, outage_grace_s: float = 0.0) -> None:
        self.ttl_s = ttl_s
        self.outage_grace_s = outage_grace_s
        self.served_in_outage = 0
        self._last_outage_log = 0.0
        # credential -> (principal, fresh until (monotonic))
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    def get(self, credential: str, *, outage: bool = False) -> Principal | None:
        """The fresh Principal of this credential; with `outage`, one within the grace too."""
        entry = self._entries.get(credential)
        if entry is None:
            return None
        principal, fresh_until = entry
        now = time.monotonic()
        if principal.expires_at is not None and time.time() >= principal.expires_at:
            self._entries.pop(credential, None)
            return None
        if now < fresh_until:
            return principal
        if now >= fresh_until + self.outage_grace_s:
            self._entries.pop(credential, None)
            return None
        return principal if outage else None

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
        except DatabaseUnavailable:
            stale = self.get(credential, outage=True)
            if stale is None:
                future.set_exception(DatabaseUnavailable())
                future.exception()
                raise
            self._served_in_outage()
            future.set_result(stale)
            return stale
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

    def _served_in_outage(self) -> None:
        self.served_in_outage += 1
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            log.warning(
                "database unavailable: serving recently resolved credentials",
                grace_s=self.outage_grace_s,
            )

    def put(self, credential: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[credential] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()
