"""Log lines are JSON and never carry secrets, tokens or emails."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

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


def _access_fields() -> dict[str, object]:
    return {
        "logger": "gateway.access",
        "method": "POST",
        "path": "/v1/chat/completions?mail=jane@example.com",
        "status_code": 200,
        "latency_ms": 7.81,
        "client_ip": "127.0.0.1",
        "user_id": 2,
        "model": "simulator-model",
        "prompt": "my password=hunter2",
        "api_key": "sk-0123456789abcdef",
        "level": "overwritten",
        "ttft_ms": None,
    }


@pytest.mark.parametrize("quiet", [False, True])
def test_the_access_line_is_what_the_structlog_chain_writes(
    capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    """The access log's own writer (no processor chain, one write per loop turn) writes what
    `log.info("request", ...)` writes through the chain: the same keys in the same order, the
    same values and masking; the timestamp in the same form."""
    from app.core import logging as logs
    from app.core.request_context import set_request_id

    configure_logging("DEBUG", "json")
    set_request_id("rid-1")
    try:
        logs.access_line(_access_fields(), quiet=quiet)
        logs.flush_access_lines()
        log = structlog.get_logger()
        (log.debug if quiet else log.info)("request", **_access_fields())
    finally:
        set_request_id(None)
    direct, chain = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert list(direct) == list(chain)
    stamp_direct, stamp_chain = direct.pop("timestamp"), chain.pop("timestamp")
    assert direct == chain
    assert direct["level"] == ("debug" if quiet else "info") and direct["request_id"] == "rid-1"
    assert "hunter2" not in json.dumps(direct) and "jane@" not in direct["path"]
    assert len(stamp_direct) == len(stamp_chain) and stamp_direct.endswith("Z")


async def test_access_lines_of_one_loop_turn_leave_in_one_write() -> None:
    """Lines queued in one turn of the loop are written once, at the next turn; nothing below
    the level is written at all."""
    from app.core import logging as logs

    configure_logging("INFO", "json")
    writes: list[str] = []

    class Out:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    real, sys.stdout = sys.stdout, Out()  # type: ignore[assignment]
    try:
        for n in range(3):
            logs.access_line({"logger": "gateway.access", "n": n})
        logs.access_line({"logger": "gateway.access", "n": 3}, quiet=True)  # debug: dropped
        assert writes == []
        await asyncio.sleep(0)
    finally:
        sys.stdout = real
    assert len(writes) == 1
    assert [json.loads(x)["n"] for x in writes[0].splitlines()] == [0, 1, 2]
    assert writes[0].endswith("\n")


class _Out:
    """A stdout that keeps what is written; `ascii_only` refuses what ASCII cannot encode."""

    def __init__(self, ascii_only: bool = False) -> None:
        self.writes: list[str] = []
        self.ascii_only = ascii_only

    def write(self, text: str) -> int:
        if self.ascii_only:
            text.encode("ascii")  # UnicodeEncodeError, as a stdout in an ASCII locale
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_line_stdout_cannot_encode_costs_no_other_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client chooses its path, and the path is in its access line: a character the stdout
    cannot encode must not take the other lines of the same write with it (nor its own)."""
    from app.core import logging as logs

    configure_logging("INFO", "json")
    out = _Out(ascii_only=True)
    monkeypatch.setattr(sys, "stdout", out)
    logs.access_line({"logger": "gateway.access", "path": "/a"})
    logs.access_line({"logger": "gateway.access", "path": "/é"})
    logs.access_line({"logger": "gateway.access", "path": "/b"})
    logs.flush_access_lines()
    lines = [json.loads(x) for text in out.writes for x in text.splitlines()]
    assert [x["path"] for x in lines] == ["/a", "/é", "/b"]


def test_a_loop_closed_with_a_flush_due_does_not_stop_the_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop that closes before its flush ran: the next loop's lines still leave on its next
    turn (they waited for the process to exit)."""
    from app.core import logging as logs

    configure_logging("INFO", "json")
    out = _Out()
    monkeypatch.setattr(sys, "stdout", out)

    async def log_one(n: int) -> None:
        logs.access_line({"logger": "gateway.access", "n": n})

    async def log_and_stop() -> None:
        await log_one(1)  # the flush is queued on this loop ...
        asyncio.get_running_loop().stop()  # ... which stops at the end of this turn

    first = asyncio.new_event_loop()
    task = first.create_task(log_and_stop())
    first.run_forever()
    first.close()  # the flush never ran
    assert task.done()

    async def log_and_turn() -> None:
        await log_one(2)
        await asyncio.sleep(0)

    asyncio.run(log_and_turn())
    assert [json.loads(x)["n"] for text in out.writes for x in text.splitlines()] == [1, 2]
