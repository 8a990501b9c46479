"""The door between chat requests and the model server while it is being replaced.

Open: requests pass at once (one counter increment on the hot path). Closed (a switch or a
restart is running): requests wait up to SWITCH_WAIT_S for it to open again, then get 503
`model_switching` with Retry-After. The switch first waits for the requests already inside to
finish (drain), so none is cut off and none is sent to a half-started server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.core.errors import ServiceUnavailable


class ModelSwitching(ServiceUnavailable):
    code = "model_switching"


class ServingGate:
    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0
        self.retry_after_s = 10
        self.on_change: Callable[[], None] | None = None  # told when an answer ends while closed

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def enter(self, wait_s: float) -> None:
        """Count one request in; wait while closed. Raises ModelSwitching after `wait_s`."""
        if not self._open.is_set():
            try:
                await asyncio.wait_for(self._open.wait(), wait_s)
            except TimeoutError:
                raise ModelSwitching(
                    "the model is being switched; try again shortly",
                    headers={"Retry-After": str(self.retry_after_s)},
                ) from None
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()
        if self.on_change is not None and not self._open.is_set():
            self.on_change()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is inside (answers in progress finish on the old model)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
