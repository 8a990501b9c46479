"""Periodic jobs run by the acting gateway process (GPU sampling, retention purges).

`Periodic(name, every_s, job, acting)` runs `job()` every `every_s` seconds while `acting()` is
true (only the process holding the model manager's lease acts, see `ModelManager.acting`); a
failing run is logged and the next one still happens; `stop()` cancels it and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


class Periodic:
    def __init__(
        self,
        name: str,
        every_s: float,
        job: Callable[[], Awaitable[object]],
        acting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self.every_s = every_s
        self.job = job
        self.acting = acting
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.every_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        while True:
            if self.acting():
                try:
                    await self.job()
                    self.runs += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad run must not end the job
                    log.warning("periodic job failed", job=self.name, error=repr(exc))
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
