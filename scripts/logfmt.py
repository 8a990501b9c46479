#!/usr/bin/env python3
"""The gateway's JSON log lines as readable ones (stdin -> stdout; Python's standard library
only, so it runs on a host without the gateway's virtual environment).

    2026-11-26 15:04:05.123  INFO   request  rid=4f0c..  POST /api/chat  200  812ms  user_id=3 ...

Time (UTC, as logged), level, event, request id, then for the access line method, path, status
and latency, then the other fields as key=value. A line that is not a JSON object (a model
server's output, a traceback, Compose's own messages) is printed as it is. `--color` colours
the level.
"""

from __future__ import annotations

import json
import sys

FIRST = ("timestamp", "level", "event", "request_id", "method", "path", "status_code")
SKIP = {"logger", "latency_ms", "client_ip", "exception"}
COLORS = {"debug": "2", "info": "32", "warning": "33", "error": "31", "critical": "1;31"}


def _value(v: object) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if text and " " not in text else json.dumps(text, ensure_ascii=False)


def format_line(raw: str, color: bool = False) -> str:
    line = raw.rstrip("\n")
    # `compose logs` may prefix "service-1  | "; keep the prefix, format the rest
    prefix, sep, rest = line.partition(" | ")
    body = rest if sep and rest.lstrip().startswith("{") else line
    head = prefix + sep if body is rest else ""
    if not body.lstrip().startswith("{"):
        return line
    try:
        entry = json.loads(body)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    ts = str(entry.get("timestamp", "")).replace("T", " ").replace("+00:00", "").rstrip("Z")
    level = str(entry.get("level", "-")).lower()
    level_text = f"{level.upper():<7}"
    if color and level in COLORS:
        level_text = f"\033[{COLORS[level]}m{level_text}\033[0m"
    event = entry.get("event")
    parts = [ts or "-", level_text, "-" if event in (None, "") else str(event)]
    if entry.get("request_id"):
        parts.append(f"rid={entry['request_id']}")
    if "method" in entry and "path" in entry:
        parts.append(f"{entry['method']} {entry['path']}")
    if entry.get("status_code") is not None:
        parts.append(str(entry["status_code"]))
    if entry.get("latency_ms") is not None:
        parts.append(f"{entry['latency_ms']}ms")
    extra = [
        f"{k}={_value(v)}"
        for k, v in entry.items()
        if k not in FIRST and k not in SKIP and v not in (None, "")
    ]
    text = head + "  ".join(parts + extra)
    if entry.get("exception"):  # the traceback on its own lines, as Python printed it
        text += "\n" + str(entry["exception"]).rstrip("\n")
    return text


def main(argv: list[str]) -> int:
    color = "--color" in argv
    try:
        for raw in sys.stdin:
            sys.stdout.write(format_line(raw, color) + "\n")
            sys.stdout.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
