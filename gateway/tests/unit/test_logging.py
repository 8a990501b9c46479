"""Log lines are JSON and never carry secrets, tokens or emails."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from app.core.logging import configure_logging, mask_secrets, mask_text


def test_mask_text_patterns() -> None:
    text = (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl "
        "key sk-abcdefghijklmnop mail jane.doe@example.com password=hunter2"
    )
    masked = mask_text(text)
    for secret in (
        "eyJhbGciOiJIUzI1NiJ9",
        "sk-abcdefghijklmnop",
        "jane.doe@example.com",
        "hunter2",
    ):
        assert secret not in masked


def test_structured_fields_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = structlog.get_logger("test")
    log.info(
        "login attempt",
        password="hunter2",
        new_password="hunter3",
        access_token="abc.def.ghi",
        api_key="sk-0123456789abcdef",
        email="jane@example.com",
        headers={"authorization": "Bearer zzz", "x-other": "fine"},
        output_tokens=42,
        detail="user bob@example.org said hi",
    )
    logging.getLogger("uvicorn.error").warning("stdlib line with password=hunter4")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2
    out = json.dumps(lines)
    for secret in (
        "hunter2",
        "hunter3",
        "hunter4",
        "abc.def.ghi",
        "sk-0123456789abcdef",
        "jane@example.com",
        "bob@example.org",
        "zzz",
    ):
        assert secret not in out, secret
    first = lines[0]
    assert first["event"] == "login attempt" and first["output_tokens"] == 42
    assert first["headers"]["x-other"] == "fine"
    assert first["password"] == "***"


def test_masking_is_the_same_once_a_key_is_known() -> None:
    """`mask_secrets` classifies a key once, then takes a short path for plain keys: the second
    line with the same keys is masked exactly as the first."""

    def line() -> dict[str, object]:
        return {
            "path": "/api/x?mail=jane@example.com",
            "detail": "Authorization: Bearer abc.def",
            "plain": "/v1/chat/completions",
            "count": 3,
            "ratio": 0.5,
            "flag": True,
            "nothing": None,
            "token": "t0ken",
            "nested": {"password": "hunter2", "fine": "ok"},
            "items": ["sk-0123456789abcdef", 1],
        }

    first = mask_secrets(None, "info", line())
    second = mask_secrets(None, "info", line())
    assert first == second
    assert first["path"] == "/api/x?mail=***@***" and first["plain"] == "/v1/chat/completions"
    assert first["detail"] == "Authorization: Bearer ***" and first["token"] == "***"
    assert first["nested"] == {"password": "***", "fine": "ok"}
    assert first["items"] == ["sk-***", 1] and first["count"] == 3 and first["nothing"] is None
