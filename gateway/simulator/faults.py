"""Fault specs: ``fail=503``, ``drop_after=3``, ``hang_first``, ``hang_after=2``, ``itl_ms=50``.

A spec is ``key=value`` pairs (or bare flags) separated by ``;`` or ``,``. It comes from the
``X-Sim-Fault`` header, from ``[[sim:...]]`` directives in the last user message, or from the
process-wide default (``--fault`` / ``POST /sim/config``); later sources override earlier ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

DIRECTIVE_MARK = "[[sim:"
_DIRECTIVE = re.compile(r"\[\[sim:(.*?)\]\]", re.DOTALL)
_SEPARATORS = re.compile(r"[;,]")


class FaultSpecError(ValueError):
    """A fault spec that cannot be understood."""


@dataclass(slots=True)
class FaultSpec:
    fail: int | None = None
    drop_after: int | None = None
    hang_first: bool = False
    hang_after: int | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    tokens: int | None = None

    @property
    def disrupts(self) -> bool:
        """Whether the request ends in anything but a normal, complete answer."""
        return (
            self.fail is not None
            or self.drop_after is not None
            or self.hang_first
            or self.hang_after is not None
        )

    @property
    def empty(self) -> bool:
        return self == _EMPTY

    def merged(self, other: FaultSpec) -> FaultSpec:
        """A copy of ``self`` with every field that ``other`` sets taken from ``other``."""
        result = FaultSpec()
        for f in fields(FaultSpec):
            mine = getattr(self, f.name)
            theirs = getattr(other, f.name)
            set_theirs = theirs is not None and theirs is not False
            setattr(result, f.name, theirs if set_theirs else mine)
        return result


_EMPTY = FaultSpec()


def _int(key: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise FaultSpecError(f"{key} needs an integer, got {value!r}") from None
    if number < low:
        raise FaultSpecError(f"{key} must be >= {low}")
    return number


def _ms(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FaultSpecError(f"{key} needs a number of milliseconds, got {value!r}") from None
    if not number >= 0:
        raise FaultSpecError(f"{key} must be >= 0")
    return number


def parse_spec(text: str) -> FaultSpec:
    """Parse one spec string; raises :class:`FaultSpecError` on anything unknown."""
    spec = FaultSpec()
    for raw in _SEPARATORS.split(text):
        item = raw.strip()
        if not item:
            continue
        key, has_value, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        value = value.strip()
        flag = not has_value or value.lower() in ("1", "true", "yes")
        if (key == "hang_first" and flag) or (key == "hang" and value.lower() in ("", "first")):
            spec.hang_first = True
        elif key == "hang" and has_value:
            spec.hang_after = _int("hang", value, 0)
        elif key == "hang_after" and has_value:
            spec.hang_after = _int(key, value, 0)
        elif key == "drop_after" and has_value:
            spec.drop_after = _int(key, value, 0)
        elif key == "fail" and has_value:
            status = _int(key, value, 400)
            if status > 599:
                raise FaultSpecError("fail needs an HTTP status between 400 and 599")
            spec.fail = status
        elif key == "ttft_ms" and has_value:
            spec.ttft_ms = _ms(key, value)
        elif key == "itl_ms" and has_value:
            spec.itl_ms = _ms(key, value)
        elif key == "tokens" and has_value:
            spec.tokens = _int(key, value, 1)
        else:
            raise FaultSpecError(f"unknown simulator fault {item!r}")
    return spec


def directives_in(text: str) -> FaultSpec | None:
    """Merge every ``[[sim:...]]`` directive found in ``text``; ``None`` when there is none."""
    if DIRECTIVE_MARK not in text:
        return None
    spec = FaultSpec()
    for body in _DIRECTIVE.findall(text):
        spec = spec.merged(parse_spec(body))
    return spec
