"""Per-client-IP brute-force protection for the login route.

Only failed attempts count, and the check runs before the password hash is computed, so a
blocked client costs no bcrypt work. Backed by `limits` (in-memory here; the storage URI can
point at Redis so several workers share one budget).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


class LoginThrottle:
    def __init__(
        self, max_failures: int, window_s: int, storage_uri: str = "async+memory://"
    ) -> None:
        self._item = RateLimitItemPerSecond(max_failures, window_s, namespace="login")
        storage = storage_from_string(storage_uri)
        if not isinstance(storage, Storage):
            raise ValueError(f"{storage_uri!r} is not an async storage (use async+...://)")
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def retry_after(self, client_ip: str) -> int | None:
        """Seconds to wait when this client has used up its failures, else None."""
        if await self._limiter.test(self._item, client_ip):
            return None
        stats = await self._limiter.get_window_stats(self._item, client_ip)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def record_failure(self, client_ip: str) -> None:
        await self._limiter.hit(self._item, client_ip)

    async def reset(self) -> None:
        await self._storage.reset()
