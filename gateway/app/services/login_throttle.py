"""Per-client-IP brute-force protection for the login route.

Only failed attempts count, and the check runs before the password hash is computed, so a
blocked client costs no bcrypt work. Backed by `limits` (in-memory here; the storage URI can
point at Redis so several workers share one budget).
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from app.core.errors import ServiceUnavailable
from app.services.redis_client import redis_options

log = structlog.get_logger()


def login_storage(redis_url: str | None, key_prefix: str) -> Storage:
    """Redis when configured (every gateway process shares the budget), else process memory."""
    if not redis_url:
        return MemoryStorage()
    storage = storage_from_string(
        f"async+{redis_url}",
        implementation="redispy",
        key_prefix=f"{key_prefix}:login",
        **redis_options(),  # timeouts, and the retry that survives a Redis restart
    )
    assert isinstance(storage, Storage)
    return storage


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        window_s: int,
        storage: Storage | None = None,
        *,
        fail_closed: bool = False,
    ) -> None:
        self._item = RateLimitItemPerSecond(max_failures, window_s, namespace="login")
        self._storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self.fail_closed = fail_closed

    async def retry_after(self, client_ip: str) -> int | None:
        """Seconds to wait when this client has used up its failures, else None."""
        try:
            if await self._limiter.test(self._item, client_ip):
                return None
            stats = await self._limiter.get_window_stats(self._item, client_ip)
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def record_failure(self, client_ip: str) -> None:
        try:
            await self._limiter.hit(self._item, client_ip)
        except (RedisError, OSError) as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: BaseException) -> None:
        log.warning("login throttle store unavailable", error=type(exc).__name__)
        if self.fail_closed:
            raise ServiceUnavailable(
                "login is unavailable, try again shortly",
                code="rate_limiter_unavailable",
                headers={"Retry-After": "5"},
            ) from exc

    async def reset(self) -> None:
        await self._storage.reset()
