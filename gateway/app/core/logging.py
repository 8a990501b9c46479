"""structlog set-up: JSON lines, request id on every line, secrets masked before output."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

from app.core.request_context import current_request_id

MASK = "***"
_SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential", re.IGNORECASE
)
_EMAIL_KEYS = re.compile(r"e-?mail", re.IGNORECASE)
_PATTERNS = [
    # bearer credentials and JWTs anywhere in free text
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"sk-[A-Za-z0-9_-]{8,}"), "sk-" + MASK),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), MASK + "@" + MASK),
    (
        re.compile(r"(?i)((?:password|passwd|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1" + MASK,
    ),
]


# Cheap substring checks first: most values (paths, ids, numbers) contain none of these, and
# skipping the regexes for them keeps the per-request log line cheap. One search for all of
# them (in C), not a generator over the list: this runs for every string of every log line.
_MARKERS = ("@", "sk-", "eyJ", "earer", "ASS", "ass", "ecret", "ECRET")
_ANY_MARKER = re.compile("|".join(re.escape(marker) for marker in _MARKERS))


def mask_text(text: str) -> str:
    if _ANY_MARKER.search(text) is None:
        return text
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


_PLAIN, _SECRET, _EMAIL = 0, 1, 2
_KEY_KINDS: dict[str, int] = {}  # a log line's keys are a small set: classify each once
_SCALARS = (int, float, bool, type(None))


def _key_kind(key: str) -> int:
    kind = _KEY_KINDS.get(key)
    if kind is None:
        if _SECRET_KEYS.search(key) and not key.endswith(("_tokens", "_count")):
            kind = _SECRET
        elif _EMAIL_KEYS.search(key):
            kind = _EMAIL
        else:
            kind = _PLAIN
        if len(_KEY_KINDS) < 4096:  # dict keys from arbitrary data must not grow it forever
            _KEY_KINDS[key] = kind
    return kind


def _mask_value(key: str, value: Any) -> Any:
    kind = _key_kind(key)
    if kind == _PLAIN and isinstance(value, _SCALARS):  # most fields: numbers, ids, None
        return value
    if kind == _SECRET:
        return MASK if value not in (None, "") else value
    if kind == _EMAIL and isinstance(value, str):
        return mask_text(value) if "@" in value else value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # the common case inline (a plain key holding a number, None or a string without any
    # marker: every field of the access log line); anything else goes through `_mask_value`.
    # Only values of existing keys change: iterating while assigning them is safe.
    kinds = _KEY_KINDS
    for key, value in event_dict.items():
        if kinds.get(key) == _PLAIN:
            cls = type(value)
            if cls is str:
                if _ANY_MARKER.search(value) is not None:
                    event_dict[key] = mask_text(value)
                continue
            if value is None or cls is int or cls is float or cls is bool:
                continue
        event_dict[key] = _mask_value(key, value)
    return event_dict


def add_request_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    rid = current_request_id()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


class _CurrentStdout:
    """Writes to whatever `sys.stdout` is now (cached loggers outlive test captures)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class AccessLines:
    """The access log's line, one per request, without structlog's processor chain: the same
    JSON, key for key, that `log.info("request", **fields)` gives through the chain that
    `configure_logging` sets up for JSON (`test_logging` compares the two), written to stdout
    together with the other requests' lines of the same turn of the event loop: one write per
    turn, not two per request (`print` writes the newline on its own). The chain was ~9 µs of
    the gateway's ~250 µs per request at c32 (issue 17).

    `configure_logging` installs it for the JSON format only; otherwise `access_line` goes
    through structlog."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._lines: list[bytes] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on

    def emit(self, fields: dict[str, Any], quiet: bool) -> None:
        if (logging.DEBUG if quiet else logging.INFO) < self.level:
            return
        # what the chain adds, in its order: event, level, request id, timestamp; then masking
        fields["event"] = "request"
        fields["level"] = "debug" if quiet else "info"
        rid = current_request_id()
        if rid is not None:
            fields.setdefault("request_id", rid)
        fields["timestamp"] = (
            datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")
        )
        mask_secrets(None, "", fields)
        self._lines.append(orjson.dumps(fields, default=str))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: at once
            self.flush()
            return
        if self._flush_on is not loop:  # (a loop that closed with a flush due is another loop)
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_on = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            _write(b"\n".join(lines) + b"\n")
        except ValueError:  # a stdout that cannot encode a line: each on its own, escaped
            for line in lines:
                with contextlib.suppress(ValueError, OSError):
                    _write(json.dumps(json.loads(line), separators=(",", ":")).encode() + b"\n")
        except OSError:  # stdout gone (closed pipe): nowhere to say it either
            pass


def _write(text: bytes) -> None:
    sys.stdout.write(text.decode())
    sys.stdout.flush()


_access: AccessLines | None = None
_structlog_access = structlog.get_logger()


def access_line(fields: dict[str, Any], quiet: bool = False) -> None:
    """Log the access line of a request (`quiet`: at debug level)."""
    if _access is not None:
        _access.emit(fields, quiet)
    elif quiet:
        _structlog_access.debug("request", **fields)
    else:
        _structlog_access.info("request", **fields)


def flush_access_lines() -> None:
    if _access is not None:
        _access.flush()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """One JSON line per event on stdout, secrets masked, for our logs and the libraries'.

    Our own loggers are structlog-native (no stdlib LogRecord per line: the access log is on the
    hot path); stdlib loggers (uvicorn, sqlalchemy, alembic) go through the same processors.
    """
    global _access
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    flush_access_lines()
    _access = AccessLines(logging.getLevelName(level)) if fmt == "json" else None
    atexit.unregister(flush_access_lines)
    atexit.register(flush_access_lines)  # what the last turn of the loop left
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_request_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStdout())),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log is replaced by our one-line-per-request log
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
