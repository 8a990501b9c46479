"""The model manager's state machine with a fake runtime: switches, crashes, restarts and
takeovers that overlap must end in one consistent state, never a stuck gate or an
InvalidTransition."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.errors import AppError, Conflict
from app.model_manager import views
from app.model_manager.manager import ModelManager, ModelStatus
from app.model_manager.profiles import RuntimeKind
from tests.conftest import wait_until
from tests.unit.model_manager.fakes import (
    PROFILES,
    FakeCoordinator,
    FakeRuntime,
    FakeUpstream,
    fake_settings,
)


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

    async def make(
        runtime: FakeRuntime | None = None, coordinator: Any = None, **overrides: Any
    ) -> Rig:
        settings = fake_settings(tmp_path, **overrides)
        runtime = runtime or FakeRuntime()
        upstream = FakeUpstream(runtime, settings.vllm_base_url)
        manager = ModelManager(settings, upstream, coordinator)  # type: ignore[arg-type]
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


async def test_a_crash_during_the_rollback_ends_in_error_not_stuck(rig: Any) -> None:
    """b never answers; the rollback to a starts, and a's server dies while loading: the switch
    ends failed (status error, nothing serving, the gate open), nothing restarts on its own,
    and the next switch works."""
    r = await rig(model_ready_timeout_s=0.4)
    await r.running("a")
    r.runtime.fail.add("b")
    r.runtime.load_delay_s["a"] = 1.0

    async def rollback_loading() -> bool:
        sw = r.manager.switch
        return bool(
            r.runtime.starts == ["a", "b", "a"]
            and sw is not None
            and sw.phases[-1][0].value == "loading"
        )

    await r.manager.request_switch("b")
    await wait_until(rollback_loading, timeout=5, interval=0.005)
    r.runtime.crash()
    await wait_until(lambda: not r.manager.busy, timeout=5, interval=0.01)
    m = r.manager
    assert m.status is ModelStatus.ERROR and m.current_profile is None
    assert m.gate.is_open
    assert m.history[0]["outcome"] == "failed"
    assert "rollback to 'a' failed too" in (m.error or "")
    phases = [p.value for p, _ in m.switch.phases] if m.switch else []
    assert phases[-2:] == ["loading", "failed"] and "rolling_back" in phases
    await asyncio.sleep(0.1)  # several supervisor rounds: an error is not restarted
    assert r.runtime.starts == ["a", "b", "a"]
    r.runtime.load_delay_s["a"] = 0.0
    await m.request_switch("a")
    await r.running("a")


async def test_a_crash_right_after_a_switch_is_restarted_once(rig: Any) -> None:
    r = await rig()
    await r.running("a")
    await r.manager.request_switch("b")
    await r.running("b")
    r.runtime.crash()
    await wait_until(lambda: r.manager.restarts == 1, timeout=5, interval=0.01)
    await r.running("b", timeout=10)
    assert r.runtime.starts == ["a", "b", "b"]


async def _acting_and_switch_loading(rig: Any) -> tuple[FakeRuntime, FakeCoordinator, Any]:
    """An acting process serving a, switching to b, and b loading (for half a second)."""
    runtime = FakeRuntime()
    runtime.load_delay_s["b"] = 0.5
    first = FakeCoordinator()
    r1 = await rig(runtime=runtime, coordinator=first)
    await r1.running("a")
    await r1.manager.request_switch("b")
    await wait_until(
        lambda: r1.manager.switch is not None and r1.manager.switch.phase.value == "loading",
        timeout=5,
        interval=0.005,
    )
    return runtime, first, r1


async def test_leader_loss_mid_switch_and_the_next_holder_finishes_it(rig: Any) -> None:
    """The acting process loses its lease while the target loads: it stops at once (no more
    runtime actions, its gate stays closed until the next holder's state arrives); the next
    holder takes the switch over from the shared snapshot, adopts the server that is loading
    instead of starting it again, and ends it running."""
    runtime, first, r1 = await _acting_and_switch_loading(rig)
    first.is_acting = False
    await r1.manager.on_lost()
    assert not r1.manager.gate.is_open  # still closed: the switch is not over
    assert r1.manager.active is None
    snapshot = json.loads(json.dumps(first.published[-1]))
    assert snapshot["operation"] == "switch" and snapshot["switch"]["finished_at"] is None
    assert views.shared_snapshot(r1.manager)["operation"] == "switch"

    second = FakeCoordinator(acting=False)
    r2 = await rig(runtime=runtime, coordinator=second)
    second.is_acting = True
    await r2.manager.on_elected(snapshot)
    await r2.running("b")
    assert runtime.starts == ["a", "b"]  # adopted, not started again
    assert r2.manager.history[0]["outcome"] == "success"
    assert r2.manager.switch is not None and r2.manager.switch.finished_at is not None
    # the old holder follows the new one's state: its gate opens, it shows b running
    r1.manager.apply_shared(json.loads(json.dumps(second.published[-1])))
    assert r1.manager.gate.is_open and r1.manager.current_profile == "b"
    assert r1.manager.status is ModelStatus.RUNNING


@pytest.mark.parametrize("who", ["the old holder", "a follower"])
async def test_the_shared_state_wiped_mid_switch_is_not_stuck(rig: Any, who: str) -> None:
    """The lease and the shared state are wiped while b loads (Redis keys deleted, flushed):
    the next holder, the old one or a follower, gets no shared state. It goes on from what it
    knows (the switch in progress), adopts b and ends it running. Before: `on_elected(None)`
    tried a first start, which the operation it mirrored refused, and published nothing: every
    process showed `switching` for ever with its gate closed (503 for every chat)."""
    runtime, first, r1 = await _acting_and_switch_loading(rig)
    snapshot = json.loads(json.dumps(first.published[-1]))
    first.is_acting = False
    await r1.manager.on_lost()
    if who == "the old holder":
        nxt, coordinator = r1, first
    else:
        coordinator = FakeCoordinator(acting=False)
        nxt = await rig(runtime=runtime, coordinator=coordinator)
        nxt.manager.apply_shared(snapshot)
    coordinator.is_acting = True
    await nxt.manager.on_elected(None)  # the state key is gone
    await nxt.running("b")
    assert runtime.starts == ["a", "b"]  # adopted, not started again
    assert nxt.manager.gate.is_open
    assert nxt.manager.history[0]["outcome"] == "success"
    assert coordinator.published[-1]["status"] == "running"


async def test_a_follower_forwards_and_does_not_touch_the_runtime(rig: Any) -> None:
    runtime = FakeRuntime()
    follower = FakeCoordinator(acting=False)
    r = await rig(runtime=runtime, coordinator=follower)
    await asyncio.sleep(0.1)
    assert runtime.starts == []  # it does not start the default profile
    assert not r.manager.gate.is_open  # chat waits for the acting one's state
    with pytest.raises(AssertionError, match="not forwarded"):
        await r.manager.request_switch("b")


async def test_only_the_acting_process_stops_the_server_at_shutdown(rig: Any) -> None:
    """A process that lost the lease may still be the parent of the server it started; at its
    shutdown it must leave it to the holder that adopted it. The holder, alone, stops it."""
    runtime = FakeRuntime()
    coordinator = FakeCoordinator()
    r = await rig(runtime=runtime, coordinator=coordinator)
    await r.running("a")
    coordinator.is_acting = False
    await r.manager.on_lost()
    await r.manager.stop()
    assert runtime.closed_stopping is False
    holder = await rig(runtime=FakeRuntime())
    await holder.running("a")
    await holder.manager.stop()
    assert holder.runtime.closed_stopping is True


async def test_a_reload_that_drops_the_profile_being_switched_to_is_refused(
    rig: Any, tmp_path: Path
) -> None:
    """A switch to b waits for an answer in progress (drain); a reload of a file without b
    meanwhile is refused (422, the profiles stay), as one without the running profile is.
    Before: it was accepted, and the switch then crashed on the missing profile after it had
    stopped a (status error, nothing served, 'internal error ... KeyError')."""
    r = await rig(model_stop_timeout_s=5)
    await r.running("a")
    await r.manager.gate.enter(1.0)  # an answer in progress: the switch drains first
    await r.manager.request_switch("b")
    path = r.manager.settings.model_profiles_path
    kept = {k: v for k, v in PROFILES.items() if k != "b"}
    path.write_text(yaml.safe_dump({"profiles": kept}))
    with pytest.raises(AppError) as err:
        r.manager.reload_profiles()
    assert (err.value.status_code, err.value.code) == (422, "invalid_profiles")
    assert "'b'" in err.value.message
    assert "b" in r.manager.profiles
    r.manager.gate.leave()
    await r.running("b")
    assert r.manager.history[0]["outcome"] == "success"
