"""The one way the gateway connects to Redis (rate limits, login throttle, health).

A Redis restart leaves every idle connection in the pool dead, and redis-py notices only when
a command is sent on one ("Connection closed by server"); with its default of no retries, each
pooled connection failed one request after Redis was back (a 503 with fail-closed limits, an
uncounted request with fail-open ones). A connection error is therefore retried once, on a
fresh connection. That never runs a command twice: a connection found dead this way never
delivered the command, and while Redis is really down the retry fails to connect at once.
Timeouts are not retried (the server may have run the command).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 1.0


def redis_options() -> dict[str, Any]:
    """Connection options shared by every Redis client of the gateway."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
    }


def connect_redis(url: str) -> Redis:
    return Redis.from_url(url, **redis_options())
