"""What every request input must be, whatever route takes it (SPEC §3: no NUL characters,
integers within range).

NUL (`\\u0000`) is refused with 422 before anything is sent upstream or stored: Postgres text
cannot hold it (SQLite can), so storing it would make the engines disagree, and no chat, title or
name needs it. The rule lives in three places that share `find_fault`, one per way input arrives:
`RequestModel` (every JSON and form body FastAPI validates), `RequestContextMiddleware` (every
query string and path, before routing) and the chat parser (the two chat bodies, parsed by hand).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field, field_validator

NUL = "\x00"
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# the largest integer every party holds exactly: JavaScript numbers and Redis' Lua (doubles)
SAFE_INT_MAX = 2**53 - 1
MAX_OFFSET = INT32_MAX

# a row id as the API takes it (path or query): the range of the BIGINT columns
RowId = Annotated[int, Field(ge=1, le=INT64_MAX)]
RowIdPath = Annotated[int, Path(ge=1, le=INT64_MAX)]
# per-user limit overrides: the ranges their settings allow (RATE_LIMIT_*)
RequestsPerMinute = Annotated[int, Field(ge=0, le=INT32_MAX)]
ConcurrentStreams = Annotated[int, Field(ge=0, le=INT32_MAX)]
TokensPerDay = Annotated[int, Field(ge=0, le=SAFE_INT_MAX)]


def find_fault(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first (field path, problem) in a decoded value: text with NUL, an integer outside the
    64-bit range, a float past it or not finite; None when it is clean. Walks lists and objects
    (keys too) without recursion, so no nesting depth the JSON parser accepts can exhaust the
    stack."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return (where or "body", NUL_MESSAGE)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return (where or "body", "integer out of range")
        elif isinstance(item, float):
            # orjson reads an integer past 64 bits as a float: bound floats the same way, and no
            # model server field takes an infinity or NaN
            if not math.isfinite(item):
                return (where or "body", "number must be finite")
            if abs(item) > INT64_MAX:  # as a float, -2**63 - 1 rounds to -2**63: refuse both
                return (where or "body", "number out of range")
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and NUL in key:
                    return (where or "body", "keys " + NUL_MESSAGE)
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list | tuple):
            for i in reversed(range(len(item))):
                stack.append((f"{where}.{i}" if where else str(i), item[i]))
    return None


class RequestModel(BaseModel):
    """Base of every request body model: no text in any field may hold NUL."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        fault = find_fault(value)
        if fault is not None:
            raise ValueError(fault[1])
        return value
