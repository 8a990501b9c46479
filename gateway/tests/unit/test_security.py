"""Password hashing, JWT and API-key primitives."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from app.core.security import (
    InvalidTokenError,
    api_key_matches,
    create_access_token,
    decode_access_token,
    generate_api_key,
    hash_api_key,
    hash_password,
    verify_password,
)

SECRET = "k" * 48


class TestPasswords:
    def test_roundtrip_and_cost(self) -> None:
        digest = hash_password("correct horse", rounds=5)
        assert digest.startswith("$2b$05$")
        assert verify_password("correct horse", digest)
        assert not verify_password("correct horse!", digest)

    def test_over_72_bytes(self) -> None:
        with pytest.raises(ValueError, match="72 bytes"):
            hash_password("x" * 73, rounds=4)
        assert not verify_password("x" * 100, hash_password("x" * 72, rounds=4))

    def test_malformed_stored_hash_is_a_failed_check(self) -> None:
        assert not verify_password("anything", "not-a-bcrypt-hash")


class TestTokens:
    def test_roundtrip(self) -> None:
        token, claims = create_access_token(
            username="u",
            user_id=7,
            role="user",
            version=3,
            secret=SECRET,
            lifetime=timedelta(minutes=5),
        )
        decoded = decode_access_token(token, SECRET)
        assert decoded == claims
        assert decoded.expires_at - decoded.issued_at == 300

    def test_expired(self) -> None:
        token, _ = create_access_token(
            username="u",
            user_id=7,
            role="user",
            version=0,
            secret=SECRET,
            lifetime=timedelta(seconds=-1),
        )
        with pytest.raises(InvalidTokenError, match="expired"):
            decode_access_token(token, SECRET)

    @pytest.mark.parametrize("uid", ["7", True, 7.5, None])
    def test_claim_types_are_checked(self, uid: object) -> None:
        now = int(time.time())
        token = jwt.encode(
            {"sub": "u", "uid": uid, "role": "user", "ver": 0, "iat": now, "exp": now + 60},
            SECRET,
            "HS256",
        )
        with pytest.raises(InvalidTokenError):
            decode_access_token(token, SECRET)


class TestApiKeys:
    def test_generated_keys_are_unique_and_verifiable(self) -> None:
        keys = {generate_api_key() for _ in range(100)}
        assert len(keys) == 100
        key = keys.pop()
        assert key.startswith("sk-")
        assert api_key_matches(key, hash_api_key(key))
        assert not api_key_matches(key + "x", hash_api_key(key))
