"""The principal cache's outage grace (issue 12 defect 11): only for a database outage, never
past a token's expiry, never after a revocation made through this process."""

from __future__ import annotations

import time

import pytest

from app.core.errors import DatabaseUnavailable, Unauthorized
from app.services.auth import Principal
from app.services.principal_cache import PrincipalCache


def _principal(expires_at: int | None = None) -> Principal:
    return Principal(1, "u", "user", "jwt", expires_at)


async def _down() -> Principal:
    raise DatabaseUnavailable()


async def _revoked() -> Principal:
    raise Unauthorized("token was revoked, log in again", code="invalid_token")


def _age(cache: PrincipalCache, credential: str, seconds: float) -> None:
    principal, fresh_until = cache._entries[credential]
    cache._entries[credential] = (principal, fresh_until - seconds)


async def test_stale_entry_served_only_during_an_outage_within_the_grace() -> None:
    cache = PrincipalCache(ttl_s=5, outage_grace_s=60)
    cache.put("t", _principal())
    _age(cache, "t", 10)  # past the TTL, inside the grace
    assert cache.get("t") is None
    assert await cache.resolve("t", _down) == _principal()
    with pytest.raises(Unauthorized):  # the database answered: its verdict wins
        await cache.resolve("t", _revoked)
    _age(cache, "t", 60)  # past the grace
    with pytest.raises(DatabaseUnavailable):
        await cache.resolve("t", _down)


async def test_no_grace_after_a_revocation_here_or_past_the_token_expiry() -> None:
    cache = PrincipalCache(ttl_s=5, outage_grace_s=60)
    cache.put("t", _principal())
    cache.clear()  # what a committed password change / key revocation in this process does
    with pytest.raises(DatabaseUnavailable):
        await cache.resolve("t", _down)
    cache.put("old", _principal(expires_at=int(time.time()) - 1))
    with pytest.raises(DatabaseUnavailable):
        await cache.resolve("old", _down)
    off = PrincipalCache(ttl_s=5, outage_grace_s=0)
    off.put("t", _principal())
    _age(off, "t", 6)
    with pytest.raises(DatabaseUnavailable):
        await off.resolve("t", _down)
