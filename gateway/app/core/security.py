"""Password hashing, JWTs and API keys. Pure functions: no FastAPI, no database.

bcrypt is used directly rather than through passlib: passlib 1.7.4 (its last release, 2020)
breaks against bcrypt >= 4.1 (it reads the removed `bcrypt.__about__`) and its bcrypt
wrap-bug probe raises on bcrypt 5, which refuses passwords over 72 bytes. Calling bcrypt
ourselves keeps the standard `$2b$` hashes, the configurable cost, and makes the 72-byte
limit an explicit validation rule instead of a silent truncation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import jwt

JWT_ALGORITHM = "HS256"
BCRYPT_MAX_BYTES = 72
API_KEY_PREFIX = "sk-"


def hash_password(password: str, rounds: int) -> str:
    raw = password.encode()
    if len(raw) > BCRYPT_MAX_BYTES:
        raise ValueError("password longer than 72 bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    raw = password.encode()
    if len(raw) > BCRYPT_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(raw, password_hash.encode())
    except ValueError:  # a malformed stored hash is a failed check, never a crash
        return False


# A real hash of a random password: checking against it costs what a real check costs, so an
# unknown username takes as long to reject as a wrong password.
_DUMMY_HASHES: dict[int, str] = {}


def dummy_password_check(password: str, rounds: int) -> None:
    digest = _DUMMY_HASHES.get(rounds)
    if digest is None:
        digest = _DUMMY_HASHES[rounds] = hash_password(secrets.token_hex(16), rounds)
    verify_password(password, digest)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    user_id: int
    role: str
    issued_at: int
    expires_at: int
    version: int


class InvalidTokenError(Exception):
    """Any reason a bearer token is not acceptable (expired, forged, malformed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def create_access_token(
    *, username: str, user_id: int, role: str, version: int, secret: str, lifetime: timedelta
) -> tuple[str, TokenClaims]:
    now = datetime.now(UTC)
    iat = int(now.timestamp())
    exp = int((now + lifetime).timestamp())
    payload = {
        "sub": username,
        "uid": user_id,
        "role": role,
        "ver": version,
        "iat": iat,
        "exp": exp,
    }
    token = jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)
    return token, TokenClaims(username, user_id, role, iat, exp, version)


def decode_access_token(token: str, secret: str) -> TokenClaims:
    """Verify signature (HS256 only: `alg: none` and other algorithms are refused) and expiry."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "uid", "role", "ver", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidTokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("invalid token") from exc
    sub, uid, role = payload["sub"], payload["uid"], payload["role"]
    iat, exp, ver = payload["iat"], payload["exp"], payload["ver"]
    if not (
        isinstance(sub, str)
        and isinstance(role, str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in (uid, iat, exp, ver))
    ):
        raise InvalidTokenError("invalid token claims")
    return TokenClaims(sub, uid, role, iat, exp, ver)


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys carry 256 random bits, so a fast keyed-free SHA-256 is safe to store and index."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), stored_hash)


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(API_KEY_PREFIX)
