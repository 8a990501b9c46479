"""The model manager: which profile is served, and the one switch at a time (SPEC §6).

Modelled on llama-swap's process state machine. The parts:

- `state.py`: statuses, the transition table, the switch record and the `StateMachine` whose
  every change is a compare-and-swap owned by one operation and emits an event;
- `readiness.py`: waiting for a started server to answer with its model;
- `supervision.py`: restarting a server that exits on its own;
- `views.py`: the status and profile views, and the snapshot shared with other processes;
- `coordination.py`: which gateway process acts (a lease with fencing) and how the others
  follow its state, forward switches to it and close their own serving gates;
- this module: the operations (first start or adoption, switch with rollback, restart,
  takeover) that drive the runtimes and the machine.

Chat requests go through a `ServingGate` that follows the machine: closed while an operation
is in progress, open otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from yarl import URL

from app.core.config import ModelRuntime, Settings
from app.core.errors import AppError, Conflict, NotFound
from app.core.metrics import (
    GPU_MEMORY_TOTAL,
    GPU_MEMORY_USED,
    GPU_UTILIZATION,
    MODEL_SWITCH_DURATION,
    MODEL_SWITCHES,
    MODEL_UP,
)
from app.model_manager import views
from app.model_manager.compatibility import check_compatibility
from app.model_manager.coordination import Coordinator, LocalCoordinator, cancel_all
from app.model_manager.gate import ServingGate
from app.model_manager.hardware import HardwareInfo, probe_hardware
from app.model_manager.hints import hint_for
from app.model_manager.profiles import (
    ModelProfile,
    ProfilesInvalid,
    RuntimeKind,
    load_profiles,
)
from app.model_manager.readiness import Readiness, wait_ready
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec, Runtime
from app.model_manager.runtimes.docker import DockerRuntime
from app.model_manager.runtimes.external import ExternalRuntime
from app.model_manager.runtimes.process import ProcessRuntime
from app.model_manager.state import (
    ANY,
    TRANSITIONS,
    InvalidTransition,
    ModelStatus,
    Operation,
    OpKind,
    StaleOperation,
    StateEvent,
    StateMachine,
    SwitchPhase,
    SwitchRecord,
    iso,
    now,
)
from app.model_manager.supervision import supervise
from app.services.periodic import Periodic
from app.services.upstream import UpstreamClient

__all__ = [
    "TRANSITIONS",
    "IncompatibleHardware",
    "InvalidProfiles",
    "InvalidTransition",
    "ModelManager",
    "ModelStatus",
    "Readiness",
    "SwitchPhase",
    "SwitchRecord",
]

log = structlog.get_logger()


class IncompatibleHardware(AppError):
    status_code, code = 422, "incompatible_hardware"


class InvalidProfiles(AppError):
    status_code, code = 422, "invalid_profiles"


def read_profiles(settings: Settings) -> dict[str, ModelProfile]:
    """The profiles file, read anew; an invalid one is a 422 and the old profiles stay."""
    try:
        return load_profiles(settings.model_profiles_path)
    except ProfilesInvalid as exc:
        raise InvalidProfiles(f"profiles not reloaded, the old ones stay: {exc}") from exc


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.gate = ServingGate()
        self.machine = StateMachine()
        self.profiles: dict[str, ModelProfile] = {}
        self.profiles_error: str | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self.error: str | None = None
        self.hint: str | None = None
        self.log_tail: list[str] = []
        self.restarts = 0
        self.upstream_version: str | None = None
        self.profiles_generation = 0  # the acting process counts reloads; the others follow
        self.active: Runtime | None = None
        self.supervise_interval_s = 1.0
        self.coordinator: Coordinator = coordinator or LocalCoordinator()
        self._runtimes: dict[RuntimeKind, Runtime] = {}
        self._lock = asyncio.Lock()  # the switch requests' checks, one at a time
        self._task: asyncio.Task[None] | None = None  # the operation's task
        self._following: asyncio.Task[None] | None = None  # a follower's retarget
        self._supervisor: asyncio.Task[None] | None = None
        self._hardware: HardwareInfo | None = None
        self._hardware_at = 0.0
        self._hardware_lock = asyncio.Lock()
        # the gpu_* gauges follow the GPUs between /api/models calls (SPEC §3); every process
        # may probe on demand, only the acting one samples on the timer
        self.gpu_sampler = Periodic(
            "gpu-sample",
            settings.gpu_sample_interval_s if settings.gpu_probe != "none" else 0.0,
            self._sample_gpus,
            acting=lambda: self.acting,
        )
        url = URL(settings.vllm_base_url)
        self.host = url.host or "127.0.0.1"
        self.port = url.port or 8000
        self.on_retarget: list[Callable[[str], None]] = []
        self.machine.listeners += [self._follow_gate, self._follow_metrics, self._follow_shared]
        upstream.profile_names = self.served_names
        upstream.serving_profile = lambda: self.current_profile

    # --- the machine's state, as it was read before the split ------------------------------------
    @property
    def status(self) -> ModelStatus:
        return self.machine.status

    @property
    def current_profile(self) -> str | None:
        return self.machine.current_profile

    @property
    def switch(self) -> SwitchRecord | None:
        return self.machine.switch

    @property
    def busy(self) -> bool:
        return self.machine.busy

    @property
    def acting(self) -> bool:
        """Whether this process acts on the runtimes and runs the periodic jobs (GPU sampling,
        retention): the only process, or the holder of the manager lease (issue 15)."""
        return self.coordinator.acting

    @property
    def switching_disabled_reason(self) -> str | None:
        """Why `POST /api/models/switch` is refused, or None when switching is offered.

        MODEL_RUNTIME=external means the model servers are run by someone else (a Kubernetes
        Deployment, another host): the gateway serves what is there and never tries to replace
        it, so it cannot fight the cluster (or GitOps) that owns the servers (SPEC §6)."""
        if self.settings.model_runtime is ModelRuntime.EXTERNAL:
            return (
                "model switching is off here: the model servers are managed outside the gateway "
                "(MODEL_RUNTIME=external, e.g. by Kubernetes); change the served model where "
                "they are defined (the vLLM Deployment of deploy/k8s) and this gateway follows "
                "the MODEL_DEFAULT_PROFILE it is given"
            )
        return None

    def served_names(self) -> list[str]:
        """Names a request may give the served model besides its id: the serving profile's id
        and aliases (SPEC §3)."""
        profile = self.profiles.get(self.current_profile or "")
        if profile is None or self.current_profile is None:
            return []
        return [self.current_profile, *profile.aliases]

    # --- what follows the machine's events ----------------------------------------------------
    def _follow_gate(self, event: StateEvent) -> None:
        if event.operation is not None:
            self.gate.close()
        else:
            self.gate.open()

    def _follow_metrics(self, event: StateEvent) -> None:
        MODEL_UP.set(1 if event.new is ModelStatus.RUNNING else 0)

    def _follow_shared(self, event: StateEvent) -> None:
        if event.reason != "mirror" and self.acting:
            self.coordinator.publish(views.shared_snapshot(self))

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the profiles, then act (bring up or adopt the default profile) or follow."""
        try:
            self.profiles = load_profiles(self.settings.model_profiles_path)
        except ProfilesInvalid as exc:
            self.profiles_error = str(exc)
            log.error("model profiles not loaded", reason=str(exc))
        default = self.settings.model_default_profile
        if default and default not in self.profiles:
            self.error = f"MODEL_DEFAULT_PROFILE={default!r} is not a known profile"
            self.machine.mirror(ModelStatus.ERROR, None, None, None)
            log.error("default profile unknown", profile=default)
            default = None
        if default:
            self.gate.close()  # chat waits for the first start (or the acting one's state)
        await self.coordinator.start(self)
        self._supervisor = asyncio.get_running_loop().create_task(supervise(self))
        self.gpu_sampler.start()

    async def stop(self) -> None:
        await self.gpu_sampler.stop()
        await cancel_all([t for t in (self._supervisor, self._task) if t is not None])
        # a child-process server ends with the gateway that acts, unless another gateway
        # process lives to adopt it (a process that does not act never stops one: the server
        # it once started may be another's now); containers outlive it and are adopted
        stop_servers = self.acting and not await self.coordinator.others_alive()
        await self.coordinator.stop()
        for runtime in self._runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.close(
                    stop_server=runtime.kind is RuntimeKind.PROCESS and stop_servers
                )
        self.gate.open()

    # --- the coordinator's calls -----------------------------------------------------------------
    async def on_elected(self, shared: dict[str, Any] | None) -> None:
        """This process now holds the lease: resolve what the last holder left (or start)."""
        machine = self.machine
        if shared is None and (
            machine.op is not None or machine.switch is not None or machine.current_profile
        ):
            # no shared state, but this process knows one (the store was wiped or flushed
            # while it acted or followed): go on from it, as from the last holder's
            shared = views.shared_snapshot(self)
        if shared is None:
            default = self.settings.model_default_profile
            if default and default in self.profiles:
                op = self.machine.begin(OpKind.BRING_UP, ANY)
                if op is not None:
                    self.run_op(op, self._bring_up(op, default))
            else:
                self.gate.open()
                self.coordinator.publish(views.shared_snapshot(self))
            return
        self.apply_shared(shared)
        self.machine.abandon()  # the mirror of the last holder's operation is not ours
        switch = self.machine.switch
        if switch is not None and switch.finished_at is None:
            op = self.machine.begin(OpKind.TAKEOVER, {ModelStatus.SWITCHING})
            if op is not None:
                log.warning("taking over a switch left unfinished", target=switch.target)
                self.run_op(op, self._resume_switch(op, switch))
                return
        # what runs is adopted; else the default profile starts (else the last one shared)
        default = self.settings.model_default_profile
        profile = default if default in self.profiles else self.current_profile
        if profile and profile in self.profiles:
            op = self.machine.begin(OpKind.TAKEOVER, ANY)
            if op is not None:
                self.run_op(op, self._bring_up(op, profile))
        else:
            self.gate.open()

    async def on_lost(self) -> None:
        """This process no longer holds the lease: stop acting at once."""
        task, self._task = self._task, None
        op = self.machine.abandon()
        if op is not None:
            # keep the gate closed as the operation left it, until the next holder's state says
            self.machine.mirror(self.status, self.current_profile, self.switch, op.kind)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # what it started is the next holder's to adopt; forget it here
        self.active = None
        log.warning("model manager lease lost; following", operation=op.kind if op else None)

    def apply_shared(self, shared: dict[str, Any]) -> None:
        """Follow the acting process's state (a follower, or a new holder taking over)."""
        old_profile = self.current_profile
        switch = SwitchRecord.from_dict(shared["switch"]) if shared.get("switch") else None
        op = OpKind(shared["operation"]) if shared.get("operation") else None
        self.error, self.hint = shared.get("error"), shared.get("hint")
        self.log_tail = list(shared.get("log_tail") or [])
        self.history = deque(shared.get("history") or [], maxlen=50)
        self.restarts = int(shared.get("restarts") or 0)
        self.upstream_version = shared.get("upstream_version")
        generation = int(shared.get("profiles_generation") or 0)
        if generation != self.profiles_generation:
            self.profiles_generation = generation
            try:  # the acting process reloaded the profiles: so does this one
                self.reload_profiles()
            except InvalidProfiles as exc:
                log.error(
                    "profiles reloaded by the acting process not reloaded here", error=str(exc)
                )
        profile = shared.get("current_profile")
        self.machine.mirror(ModelStatus(shared["status"]), profile, switch, op)
        if profile != old_profile:
            if profile in self.profiles:
                # a follower's client follows the acting process's server (a pool's too)
                self._following = asyncio.get_running_loop().create_task(
                    self._retarget(self.profiles[profile])
                )
            self.upstream.forget_models()

    async def handle_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """A switch forwarded by another process: answer as the route would."""
        log.info("switch forwarded by another gateway process", command=command)
        if not self.acting:  # never forward a forwarded command again
            return {
                "status": 503,
                "code": "manager_unavailable",
                "message": "the model manager changed hands; try again",
            }
        try:
            if command.get("op") == "reload":
                await self.reload_everywhere()
                return {"status": 200}
            record = await self.request_switch(str(command.get("profile_id")))
        except AppError as exc:
            return {
                "status": exc.status_code,
                "code": exc.code,
                "message": exc.message,
                "extra": exc.extra,
            }
        return {"status": 202, "switch": record.to_dict()}

    # --- runtimes -----------------------------------------------------------------------------
    def runtime_kind(self, profile: ModelProfile) -> RuntimeKind:
        if profile.runtime is not None:
            return profile.runtime
        return RuntimeKind(self.settings.model_runtime.value)

    def _runtime(self, kind: RuntimeKind) -> Runtime:
        if kind not in self._runtimes:
            runtime: Runtime
            if kind is RuntimeKind.DOCKER:
                runtime = DockerRuntime(self.settings)
            elif kind is RuntimeKind.PROCESS:
                runtime = ProcessRuntime(
                    self.settings.model_log_dir,
                    log_max_bytes=self.settings.log_max_bytes,
                    log_max_file=self.settings.log_max_file,
                )
            else:
                runtime = ExternalRuntime()
            self._runtimes[kind] = runtime
        return self._runtimes[kind]

    def _spec(self, profile_id: str) -> LaunchSpec:
        return LaunchSpec(
            profile_id=profile_id,
            profile=self.profiles[profile_id],
            host=self.host,
            port=self.port,
            hf_token=self.settings.hugging_face_hub_token,
        )

    def _base_url(self, profile: ModelProfile) -> str:
        return self._base_urls(profile)[0]

    def _base_urls(self, profile: ModelProfile) -> list[str]:
        """Where the profile's server(s) answer: several for a pool (`instances`)."""
        if self.runtime_kind(profile) is RuntimeKind.EXTERNAL:
            if profile.instances:
                return list(profile.instances)
            if profile.base_url:
                return [profile.base_url]
        return [self.settings.vllm_base_url]

    async def _retarget(self, profile: ModelProfile) -> None:
        await self.upstream.use_pool(self._base_urls(profile))
        url = self._base_url(profile)
        if url.rstrip("/") != self.upstream.base_url:
            self.upstream.retarget(url)
            for callback in self.on_retarget:
                callback(url)
        self.upstream.forget_models()

    # --- hardware -----------------------------------------------------------------------------
    async def hardware_info(self, *, max_age_s: float = 5.0) -> HardwareInfo:
        if self._hardware is not None and time.monotonic() - self._hardware_at < max_age_s:
            return self._hardware
        async with self._hardware_lock:
            if self._hardware is not None and time.monotonic() - self._hardware_at < max_age_s:
                return self._hardware
            hw = await probe_hardware(self.settings.gpu_probe)
            for gpu in hw.gpus:
                label = str(gpu.index)
                if gpu.utilization_percent is not None:
                    GPU_UTILIZATION.labels(label).set(gpu.utilization_percent)
                GPU_MEMORY_USED.labels(label).set(gpu.memory_used_mb * 1024 * 1024)
                GPU_MEMORY_TOTAL.labels(label).set(gpu.memory_total_mb * 1024 * 1024)
            self._hardware, self._hardware_at = hw, time.monotonic()
            return hw

    async def _sample_gpus(self) -> None:
        # a sample younger than half the interval (an /api/models call just probed) is reused
        await self.hardware_info(max_age_s=self.gpu_sampler.every_s / 2)

    # --- operations: the common frame -----------------------------------------------------------
    def run_op(self, op: Operation, steps: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._op_frame(op, steps))

    async def _op_frame(self, op: Operation, steps: Coroutine[Any, Any, None]) -> None:
        try:
            await steps
        except StaleOperation:
            log.warning("operation stopped: it no longer owns the manager", operation=op.kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the gate closed or the status stuck
            log.exception("model manager operation crashed", operation=op.kind)
            if self.machine.op == op:
                self.failed(f"internal error ({op.kind.value}): {type(exc).__name__}: {exc}")
                with contextlib.suppress(InvalidTransition):
                    self.machine.move(op, ANY, ModelStatus.ERROR)
        finally:
            self.upstream.forget_models()
            self.machine.finish(op)
            if self._task is asyncio.current_task():
                self._task = None

    def failed(self, error: str) -> None:
        self.error = error
        self.hint = hint_for([*self.log_tail, error])
        log.error("model server failed", error=error, hint=self.hint, log_tail=self.log_tail[-5:])

    async def _wait_ready(self, runtime: Runtime, profile: ModelProfile) -> Readiness:
        ready = await wait_ready(
            self.upstream,
            runtime,
            profile,
            self._base_urls(profile),
            profile.ready_timeout_s or self.settings.model_ready_timeout_s,
        )
        if ready.ok:
            self.upstream_version = ready.version
        return ready

    async def _launch(self, op: Operation, profile_id: str) -> Readiness:
        """Start a profile's server and wait until it answers; on failure leave nothing running."""
        profile = self.profiles[profile_id]
        runtime = self._runtime(self.runtime_kind(profile))
        self.machine.phase(op, SwitchPhase.STARTING)
        await self._retarget(profile)
        self.coordinator.check_fence()
        try:
            await runtime.start(self._spec(profile_id))
        except LaunchFailed as exc:
            return Readiness(False, str(exc))
        self.machine.check(op)
        self.active = runtime
        self.machine.phase(op, SwitchPhase.LOADING)
        if self.status is ModelStatus.STARTING:
            self.machine.move(op, {ModelStatus.STARTING}, ModelStatus.LOADING)
        ready = await self._wait_ready(runtime, profile)
        self.machine.check(op)
        if not ready.ok:
            self.log_tail = await runtime.log_tail()
            await runtime.stop(self.settings.model_stop_timeout_s)
            await self.upstream.renew_pool()
            self.active = None
        return ready

    # --- first start, adoption and takeover -----------------------------------------------------
    async def _adopt(self, op: Operation, wanted: str | None = None) -> str | None:
        """Adopt a server left running (by an earlier gateway, or the last lease holder); the
        profile it serves when it answers, else None (and nothing adopted that is dead)."""
        for kind in (RuntimeKind.DOCKER, RuntimeKind.PROCESS):
            if not any(self.runtime_kind(p) is kind for p in self.profiles.values()):
                continue
            runtime = self._runtime(kind)
            with contextlib.suppress(Exception):
                found = await runtime.discover()
                self.machine.check(op)
                if found is None or found not in self.profiles:
                    continue
                if wanted is not None and found != wanted:
                    # not the one wanted: take it over only to stop it
                    if await runtime.adopt(self._spec(found)):
                        self.coordinator.check_fence()
                        await runtime.stop(self.settings.model_stop_timeout_s)
                    continue
                if not await runtime.adopt(self._spec(found)):
                    continue
                profile = self.profiles[found]
                await self._retarget(profile)
                self.active = runtime
                ready = await self._wait_ready(runtime, profile)
                self.machine.check(op)
                if ready.ok:
                    log.info("adopted the running model server", profile=found)
                    return found
                log.warning("adopted server is not healthy, restarting", error=ready.error)
                self.coordinator.check_fence()
                await runtime.stop(self.settings.model_stop_timeout_s)
                self.active = None
        return None

    async def _bring_up(self, op: Operation, profile_id: str) -> None:
        if self.status is not ModelStatus.STARTING:
            self.machine.move(op, ANY, ModelStatus.STARTING, current_profile=profile_id)
        adopted = await self._adopt(op)
        if adopted is not None:
            self.error = self.hint = None
            self.machine.move(
                op, {ModelStatus.STARTING}, ModelStatus.RUNNING, current_profile=adopted
            )
            return
        self.machine.update(op, "starting", current_profile=profile_id)
        started = time.monotonic()
        ready = await self._launch(op, profile_id)
        if ready.ok:
            self.error = self.hint = None
            self.machine.move(op, {ModelStatus.LOADING}, ModelStatus.RUNNING)
            log.info("model server ready", profile=profile_id, seconds=time.monotonic() - started)
        else:
            self.failed(ready.error or "unknown failure")
            self.machine.move(op, ANY, ModelStatus.ERROR)

    async def _resume_switch(self, op: Operation, record: SwitchRecord) -> None:
        """A new lease holder finishes the switch the last one left: keep the target if it
        already answers, else carry the switch out again (with its rollback)."""
        self.machine.update(op, "takeover", switch=record)
        adopted = await self._adopt(op, wanted=record.target)
        if adopted == record.target:
            self.machine.phase(op, SwitchPhase.RUNNING)
            self.error = self.hint = None
            self.machine.move(op, ANY, ModelStatus.RUNNING, current_profile=record.target)
            self._switch_finished(record, "success")
            return
        outcome = "failed"
        try:
            outcome = await self._switch_steps(op, record)
        finally:
            self._switch_finished(record, outcome)

    # --- switching ------------------------------------------------------------------------------
    def serving_profile(self, model_id: str) -> ModelProfile | None:
        """The managed profile serving `model_id` (None when nothing is managed)."""
        if self.current_profile is None:
            return None
        for profile in self.profiles.values():
            if model_id == profile.served_name or model_id in profile.aliases:
                return profile
        return self.profiles.get(self.current_profile)

    def _require_profile(self, profile_id: str) -> ModelProfile:
        profile = self.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no model profile {profile_id!r}", code="profile_not_found")
        return profile

    async def request_switch(self, profile_id: str) -> SwitchRecord:
        """Check and begin a switch; it runs in the background (in the acting process). 404 /
        409 / 422 here, whichever process is asked."""
        if (reason := self.switching_disabled_reason) is not None:
            raise Conflict(reason, code="switching_disabled")
        profile = self._require_profile(profile_id)
        hw = await self.hardware_info(max_age_s=1.0)
        compat = check_compatibility(profile, hw)
        if not compat.compatible:
            raise IncompatibleHardware(
                f"profile {profile_id!r} cannot run on this hardware: " + "; ".join(compat.reasons),
                extra={"reasons": compat.reasons, "details": compat.details},
            )
        if not self.acting:
            answer = await self.coordinator.forward("switch", profile_id)
            return SwitchRecord.from_dict(answer["switch"])
        async with self._lock:
            record = SwitchRecord(target=profile_id, previous=self.current_profile)
            record.phases.append((SwitchPhase.STOPPING, record.started_at))
            op = self.machine.begin(
                OpKind.SWITCH,
                {ModelStatus.RUNNING, ModelStatus.ERROR, ModelStatus.STOPPED},
                ModelStatus.SWITCHING,
                switch=record,
            )
            if op is None:
                busy = self.machine.op
                what = "a switch" if busy and busy.kind is OpKind.SWITCH else "a model start"
                target = self.switch.target if self.switch else self.current_profile
                raise Conflict(
                    f"{what} is already in progress (to {target!r}); wait for it to finish",
                    code="switch_in_progress",
                )
            self.run_op(op, self._run_switch(op, record))
        return record

    async def _run_switch(self, op: Operation, record: SwitchRecord) -> None:
        outcome = "failed"
        try:
            outcome = await self._switch_steps(op, record)
        except (StaleOperation, asyncio.CancelledError):
            outcome = "abandoned"
            raise
        except Exception as exc:
            record.error = f"internal error during the switch: {type(exc).__name__}: {exc}"
            raise
        finally:
            if outcome != "abandoned":
                self._switch_finished(record, outcome)

    def _switch_finished(self, record: SwitchRecord, outcome: str) -> None:
        record.finished_at = now()
        duration = time.monotonic() - record.started_mono
        MODEL_SWITCHES.labels(outcome).inc()
        MODEL_SWITCH_DURATION.observe(duration)
        self.history.appendleft(
            {
                "from_profile": record.previous,
                "to_profile": record.target,
                "started_at": iso(record.started_at),
                "finished_at": iso(record.finished_at),
                "duration_s": round(duration, 3),
                "drain_s": round(record.waited_drain_s, 3),
                "outcome": outcome,
                "error": record.error,
            }
        )
        log.info(
            "model switch finished",
            target=record.target,
            previous=record.previous,
            outcome=outcome,
            duration_s=round(duration, 3),
            error=record.error,
        )

    async def _drained(self, record: SwitchRecord, timeout_s: float) -> bool:
        """Wait until no answer is running, in this process and in the others (each of which
        must first say that its gate is closed for this switch)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not await self.gate.drained(timeout_s):
            return False
        key = iso(record.started_at) or ""
        while await self.coordinator.remote_pending(key) > 0:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _switch_steps(self, op: Operation, record: SwitchRecord) -> str:
        started = time.monotonic()
        drained = await self._drained(record, self.settings.model_stop_timeout_s)
        self.machine.check(op)
        record.waited_drain_s = time.monotonic() - started
        if not drained:
            log.warning("answers still running at the switch; they will be cut")
        old, self.active = self.active, None  # the supervisor must not restart what we stop
        if old is not None:
            self.coordinator.check_fence()
            await old.stop(self.settings.model_stop_timeout_s)
            await self.upstream.renew_pool()
        self.log_tail = []
        ready = await self._launch(op, record.target)
        if ready.ok:
            self.error = self.hint = None
            self.machine.phase(op, SwitchPhase.RUNNING)
            self.machine.move(
                op, {ModelStatus.SWITCHING}, ModelStatus.RUNNING, current_profile=record.target
            )
            return "success"
        error = f"switch to {record.target!r} failed: {ready.error}"
        self.failed(error)
        record.error = error
        previous = record.previous
        if previous is not None and previous != record.target and previous in self.profiles:
            self.machine.phase(op, SwitchPhase.ROLLING_BACK)
            tail, hint = self.log_tail, self.hint
            back = await self._launch(op, previous)
            self.log_tail, self.hint = tail, hint  # keep the failed server's log, not ours
            if back.ok:
                self.error = f"{error}; rolled back to {previous!r}"
                record.error = self.error
                self.machine.phase(op, SwitchPhase.FAILED)
                self.machine.move(
                    op, {ModelStatus.SWITCHING}, ModelStatus.RUNNING, current_profile=previous
                )
                return "rolled_back"
            self.error = f"{error}; rollback to {previous!r} failed too: {back.error}"
            record.error = self.error
        self.machine.phase(op, SwitchPhase.FAILED)
        self.machine.move(op, {ModelStatus.SWITCHING}, ModelStatus.ERROR, current_profile=None)
        return "failed"

    # --- restarts (supervision.py decides) --------------------------------------------------------
    async def restart_steps(
        self, op: Operation, profile_id: str, detail: str, *, delay_s: float
    ) -> None:
        runtime = self.active
        if runtime is not None:
            self.log_tail = await runtime.log_tail()
        self.error = f"the model server exited ({detail}); restarting"
        self.machine.update(op, "restarting")
        await asyncio.sleep(delay_s)
        self.machine.check(op)
        with contextlib.suppress(Exception):
            if self.active is not None:
                self.coordinator.check_fence()
                await self.active.stop(self.settings.model_stop_timeout_s)
        await self.upstream.renew_pool()
        ready = await self._launch(op, profile_id)
        if ready.ok:
            self.error = None
            self.machine.move(op, {ModelStatus.LOADING, ModelStatus.STARTING}, ModelStatus.RUNNING)
        else:
            self.failed(ready.error or "restart failed")
            self.machine.move(op, ANY, ModelStatus.ERROR)

    async def recover_external(self) -> bool:
        """The status is `error` with an `external` profile (its server did not answer within
        the ready timeout, nothing else to restart): when it answers now, follow it back to
        `running`. True when it did."""
        profile_id = self.current_profile
        profile = self.profiles.get(profile_id or "")
        if (
            profile_id is None
            or profile is None
            or self.runtime_kind(profile) is not RuntimeKind.EXTERNAL
        ):
            return False
        runtime = self._runtime(RuntimeKind.EXTERNAL)
        # one look (no waiting): the gate stays open meanwhile, as it is in `error`
        ready = await wait_ready(self.upstream, runtime, profile, self._base_urls(profile), 0.0)
        if not ready.ok or self.current_profile != profile_id:
            return False
        op = self.machine.begin(OpKind.RESTART, {ModelStatus.ERROR}, ModelStatus.STARTING)
        if op is None:  # an operation began meanwhile: it decides
            return False
        log.warning("the external model server answers now", profile=profile_id)
        self.run_op(op, self._recover_steps(op, profile_id))
        return True

    async def _recover_steps(self, op: Operation, profile_id: str) -> None:
        ready = await self._launch(op, profile_id)  # nothing to start: waits for its answer
        if ready.ok:
            self.error = self.hint = None
            self.machine.move(op, {ModelStatus.LOADING, ModelStatus.STARTING}, ModelStatus.RUNNING)
        else:
            self.failed(ready.error or "the external model server stopped answering")
            self.machine.move(op, ANY, ModelStatus.ERROR)

    # --- profiles -----------------------------------------------------------------------------
    def reload_profiles(
        self, profiles: dict[str, ModelProfile] | None = None
    ) -> dict[str, ModelProfile]:
        """Take the profiles file's new contents (`profiles`: already read by the caller), unless
        what this manager serves or is starting is missing from it (422, nothing changes)."""
        if profiles is None:
            profiles = read_profiles(self.settings)
        self.check_profiles(profiles)
        self.profiles, self.profiles_error = profiles, None
        log.info("model profiles reloaded", count=len(profiles))
        return profiles

    def check_profiles(self, profiles: dict[str, ModelProfile]) -> None:
        """Refuse new profiles without the one this manager serves or a switch is starting."""
        if self.current_profile is not None and self.current_profile not in profiles:
            raise InvalidProfiles(
                f"profiles not reloaded: the running profile {self.current_profile!r} is missing "
                "from the file (switch away from it first)"
            )
        switch = self.switch
        if switch is not None and switch.finished_at is None and switch.target not in profiles:
            raise InvalidProfiles(
                f"profiles not reloaded: the profile {switch.target!r} a switch is starting is "
                "missing from the file (reload once the switch has ended)"
            )

    async def reload_everywhere(
        self, profiles: dict[str, ModelProfile] | None = None
    ) -> dict[str, ModelProfile]:
        """Reload here (refused with the reason, as before), then in every gateway process: the
        acting one counts a new generation in its shared state and the others reload on it."""
        profiles = self.reload_profiles(profiles)
        if self.acting:
            self.profiles_generation += 1
            self.coordinator.publish(views.shared_snapshot(self))
        else:
            await self.coordinator.forward("reload")
        return profiles

    async def profile_views(self) -> dict[str, dict[str, Any]]:
        return await views.profile_views(self)

    async def recommendations(self) -> dict[str, Any]:
        return await views.recommendations(self)

    async def status_view(self) -> dict[str, Any]:
        return await views.status_view(self)
