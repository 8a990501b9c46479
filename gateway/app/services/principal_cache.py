"""A short-lived, in-process cache of resolved credentials.

Resolving a bearer token costs a signature check and a database read; on the chat hot path that
read would dominate. A credential's Principal is kept for `AUTH_CACHE_TTL_S` (never past the
token's own expiry). Any change to accounts or keys committed by this process clears the cache
at once; another gateway process sees it within the TTL.
"""

from __future__ import annotations

import time

from app.services.auth import Principal

MAX_ENTRIES = 50_000


class PrincipalCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}

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

    def put(self, credential: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[credential] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()
