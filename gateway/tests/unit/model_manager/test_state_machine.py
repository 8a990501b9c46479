"""The model manager's state machine with a fake runtime: switches, crashes, restarts and
takeovers that overlap must end in one consistent state, never a stuck gate or an
InvalidTransition."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import Conflict
from app.model_manager.manager import ModelManager, ModelStatus
from app.model_manager.profiles import RuntimeKind
from tests.conftest import wait_until
from tests.unit.model_manager.fakes import FakeRuntime, FakeUpstream, fake_settings


class Rig:
    def __init__(self, manager: ModelManager, runtime: FakeRuntime) -> None:
        self.manager = manager
        self.runtime = runtime

    async def running(self, profile: str, timeout: float = 5.0) -> None:
        m = self.manager

        def ok() -> bool:
            return (
                m.status is ModelStatus.RUNNING
                and m.current_profile == profile
                and m.gate.is_open
                and not m.busy
            )

        try:
            await wait_until(ok, timeout=timeout, interval=0.01)
        except AssertionError:
            raise AssertionError(
                f"not running {profile!r}: {m.status} {m.current_profile} op={m.machine.op} "
                f"gate_open={m.gate.is_open} error={m.error}"
            ) from None


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Exceptions that escaped a task (`Task exception was never retrieved`)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


@pytest.fixture
async def rig(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[Callable[..., Any]]:
    made: list[ModelManager] = []

    async def make(**overrides: Any) -> Rig:
        settings = fake_settings(tmp_path, **overrides)
        runtime = FakeRuntime()
        manager = ModelManager(settings, FakeUpstream(runtime, settings.vllm_base_url))  # type: ignore[arg-type]
        manager._runtimes[RuntimeKind.PROCESS] = runtime
        manager.supervise_interval_s = 0.02
        made.append(manager)
        await manager.start()
        return Rig(manager, runtime)

    yield make
    for manager in made:
        await manager.stop()
    gc.collect()
    assert not loop_errors, loop_errors


@pytest.mark.parametrize("held", ["alive", "log_tail"])
async def test_a_switch_started_while_the_supervisor_awaits_is_not_overwritten(
    rig: Any, held: str
) -> None:
    """The server dies; the supervisor notices and awaits (`alive()`, or the log); a switch is
    asked meanwhile. Whichever got the machine first carries on alone: either the switch (no
    restart of the old profile, a second switch is a 409, it ends running the target) or the
    restart (the switch is a 409, the old profile runs again, a switch afterwards works).
    Before the fix the supervisor overwrote the switch after its `await` and raised
    InvalidTransition('switching -> starting'), and a second switch was accepted meanwhile."""
    r = await rig()
    await r.running("a")
    r.runtime.load_delay_s["b"] = 0.3
    r.runtime.hold[held] = asyncio.Event()
    r.runtime.crash()
    await asyncio.wait_for(r.runtime.entered[held].wait(), 5)
    try:
        await r.manager.request_switch("b")
        switched = True
    except Conflict:
        switched = False
    r.runtime.hold[held].set()
    await asyncio.sleep(0.05)  # the supervisor resumes after its await
    with pytest.raises(Conflict):
        await r.manager.request_switch("c")
    if switched:
        await r.running("b")
        assert r.runtime.starts == ["a", "b"]
        assert r.manager.switch is not None and r.manager.switch.error is None
        assert r.manager.history[0]["outcome"] == "success"
    else:
        await r.running("a")
        assert r.runtime.starts == ["a", "a"]
        assert r.manager.restarts == 1
        await r.manager.request_switch("b")
        await r.running("b")
