"""Ending the streams in time when the server is told to stop.

On SIGTERM (or SIGINT) uvicorn stops accepting, waits up to its graceful window
(`GRACEFUL_SHUTDOWN_S`) for responses to end, then cancels what still runs mid-write: the client
gets no error event and no `[DONE]`, the log a traceback per stream. The application is not told
when that window opens, so the lifespan puts a handler in front of the server's: it passes the
signal on and arms a timer that ends every answer still running `SHUTDOWN_STREAM_MARGIN_S`
before the window closes (`ChatService.stop_streams`: error event + `[DONE]`, stored as cut).
Answers that finish inside that time are left to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger()

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownWatch:
    def __init__(self, delay_s: float, on_due: Callable[[], Any]) -> None:
        self.delay_s = delay_s
        self.on_due = on_due
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._installed: dict[int, Any] = {}  # signal -> the handler we put in front of

    def install(self) -> None:
        """Chain in front of the server's handlers (only the main thread may; else nothing)."""
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            try:
                previous = signal.getsignal(sig)
                if not callable(previous):
                    continue  # no server waiting on this signal: it ends the process anyway
                signal.signal(sig, self._handler(previous))
            except ValueError:  # not the main thread
                return
            self._installed[sig] = previous

    def _handler(self, previous: Callable[[int, FrameType | None], Any]) -> Any:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.arm)
            previous(signum, frame)

        return handle

    def arm(self) -> None:
        if self._timer is None and self._loop is not None:
            log.info("shutdown requested: streams end in time", after_s=self.delay_s)
            self._timer = self._loop.call_later(self.delay_s, self._due)

    def _due(self) -> None:
        stopped = self.on_due()
        log.info("shutdown: streams still running were ended", count=stopped)

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, previous in self._installed.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, previous)
        self._installed.clear()
