"""scripts/logfmt.py, the formatter behind ./logs: readable lines from the gateway's JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from app.core.config import REPO_DIR

_spec = importlib.util.spec_from_file_location("logfmt", REPO_DIR / "scripts" / "logfmt.py")
assert _spec is not None and _spec.loader is not None
logfmt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(logfmt)

ACCESS = {
    "logger": "gateway.access",
    "method": "POST",
    "path": "/api/chat",
    "status_code": 429,
    "latency_ms": 3.5,
    "client_ip": "10.0.0.1",
    "user_id": 7,
    "error_code": "rate_limited",
    "event": "request",
    "level": "info",
    "request_id": "abc123",
    "timestamp": "2026-11-26T15:53:52.195774Z",
}


def test_access_line_reads_time_level_event_rid_request_status_latency() -> None:
    line = logfmt.format_line(json.dumps(ACCESS))
    assert line == (
        "2026-11-26 15:53:52.195774  INFO     request  rid=abc123  POST /api/chat  429  3.5ms"
        "  user_id=7  error_code=rate_limited"
    )


def test_other_lines_pass_through_and_tracebacks_keep_their_lines() -> None:
    assert logfmt.format_line("INFO:     Uvicorn running\n") == "INFO:     Uvicorn running"
    assert logfmt.format_line("{not json") == "{not json"
    assert logfmt.format_line("[1, 2]") == "[1, 2]"
    error = {"event": "boom", "level": "error", "exception": "Traceback\n  File x\nValueError"}
    assert logfmt.format_line(json.dumps(error)).splitlines() == [
        "-  ERROR    boom",
        "Traceback",
        "  File x",
        "ValueError",
    ]
    # a value with spaces is quoted, so key=value stays one field
    quoted = logfmt.format_line(json.dumps({"event": "e", "level": "info", "why": "two words"}))
    assert quoted.endswith('why="two words"')


def test_compose_prefix_is_kept() -> None:
    line = logfmt.format_line("gateway-1  | " + json.dumps(ACCESS))
    assert line.startswith("gateway-1  | 2026-11-26 15:53:52.195774  INFO     request  rid=abc123")


def test_as_a_filter_with_stdlib_python() -> None:
    out = subprocess.run(
        [sys.executable, "-I", str(REPO_DIR / "scripts" / "logfmt.py")],
        input=json.dumps(ACCESS) + "\nplain\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    assert out[0].startswith("2026-11-26 15:53:52.195774  INFO") and out[1] == "plain"


def test_null_fields_are_dashes_not_python_none() -> None:
    """A null latency printed `Nonems`, a null event `None`: Python's repr leaking to the
    operator. Absent or null reads the same."""
    entry = {"event": None, "method": "GET", "path": "/x", "level": "info"}
    line = logfmt.format_line(json.dumps({**entry, "status_code": None, "latency_ms": None}))
    assert "None" not in line, line
    assert line.split() == ["-", "INFO", "-", "GET", "/x"], line
    assert "GET /x" in line
