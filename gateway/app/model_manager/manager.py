"""The model manager: which profile is served, and the one switch at a time (SPEC §6).

Modelled on llama-swap's process state machine: typed states, one transition table, changes
made under one lock, one log event per transition. Chat requests go through a `ServingGate`
that a switch or a restart closes, drains, and opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog
from yarl import URL

from app.core.config import ModelRuntime, Settings
from app.core.errors import AppError, Conflict, NotFound
from app.core.metrics import (
    GPU_MEMORY_TOTAL,
    GPU_MEMORY_USED,
    GPU_UTILIZATION,
    MODEL_SERVER_RESTARTS,
    MODEL_SWITCH_DURATION,
    MODEL_SWITCHES,
    MODEL_UP,
)
from app.model_manager.compatibility import check_compatibility, recommend
from app.model_manager.gate import ServingGate
from app.model_manager.hardware import HardwareInfo, probe_hardware
from app.model_manager.hints import hint_for
from app.model_manager.profiles import (
    ModelProfile,
    ProfilesInvalid,
    RuntimeKind,
    load_profiles,
    profile_view,
)
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec, Runtime
from app.model_manager.runtimes.docker import DockerRuntime
from app.model_manager.runtimes.external import ExternalRuntime
from app.model_manager.runtimes.process import ProcessRuntime
from app.services.periodic import Periodic
from app.services.upstream import UpstreamClient

log = structlog.get_logger()


class ModelStatus(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    RUNNING = "running"
    SWITCHING = "switching"
    ERROR = "error"


class SwitchPhase(StrEnum):
    STOPPING = "stopping"
    STARTING = "starting"
    LOADING = "loading"
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    FAILED = "failed"


S = ModelStatus
TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    S.STOPPED: frozenset({S.STARTING, S.SWITCHING}),
    S.STARTING: frozenset({S.LOADING, S.ERROR, S.STOPPED}),
    S.LOADING: frozenset({S.RUNNING, S.ERROR, S.STOPPED}),
    S.RUNNING: frozenset({S.SWITCHING, S.STARTING, S.ERROR, S.STOPPED}),
    S.SWITCHING: frozenset({S.RUNNING, S.ERROR, S.STOPPED}),
    S.ERROR: frozenset({S.SWITCHING, S.STARTING, S.STOPPED}),
}


class InvalidTransition(RuntimeError):
    pass


class IncompatibleHardware(AppError):
    status_code, code = 422, "incompatible_hardware"


class InvalidProfiles(AppError):
    status_code, code = 422, "invalid_profiles"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass
class SwitchRecord:
    target: str
    previous: str | None
    phase: SwitchPhase = SwitchPhase.STOPPING
    started_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None
    error: str | None = None
    phases: list[tuple[SwitchPhase, datetime]] = field(default_factory=list)
    started_mono: float = field(default_factory=time.monotonic)
    waited_drain_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "previous": self.previous,
            "phase": self.phase.value,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "phases": [{"phase": p.value, "at": _iso(at)} for p, at in self.phases],
        }


@dataclass(frozen=True)
class Readiness:
    ok: bool
    error: str | None = None


class ModelManager:
    def __init__(self, settings: Settings, upstream: UpstreamClient) -> None:
        self.settings = settings
        self.upstream = upstream
        self.gate = ServingGate()
        self.profiles: dict[str, ModelProfile] = {}
        self.profiles_error: str | None = None
        self.current_profile: str | None = None
        self.status = ModelStatus.STOPPED
        self.switch: SwitchRecord | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self.error: str | None = None
        self.hint: str | None = None
        self.log_tail: list[str] = []
        self.restarts = 0
        self.upstream_version: str | None = None
        self.active: Runtime | None = None
        self._runtimes: dict[RuntimeKind, Runtime] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None  # a switch, the first start or a restart
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
        upstream.profile_names = self.served_names
        upstream.serving_profile = lambda: self.current_profile

    @property
    def acting(self) -> bool:
        """Whether this process is the one that acts on the runtimes and runs the periodic jobs
        (GPU sampling, retention). One process alone always is; with several gateway processes
        only the holder of the manager lease is (issue 15)."""
        return True

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

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the profiles and bring up (or adopt) the default profile in the background."""
        try:
            self.profiles = load_profiles(self.settings.model_profiles_path)
        except ProfilesInvalid as exc:
            self.profiles_error = str(exc)
            log.error("model profiles not loaded", reason=str(exc))
        default = self.settings.model_default_profile
        if default:
            if default not in self.profiles:
                self._set_status(ModelStatus.ERROR)
                self.error = f"MODEL_DEFAULT_PROFILE={default!r} is not a known profile"
                log.error("default profile unknown", profile=default)
            else:
                self.gate.close()  # chat waits for the first start instead of failing
                self._task = asyncio.get_running_loop().create_task(self._bring_up(default))
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        self.gpu_sampler.start()

    async def stop(self) -> None:
        await self.gpu_sampler.stop()
        for task in (self._supervisor, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for runtime in self._runtimes.values():
            # child processes end with the gateway; containers outlive it and are adopted
            with contextlib.suppress(Exception):
                await runtime.close(stop_server=runtime.kind is RuntimeKind.PROCESS)
        self.gate.open()

    # --- state --------------------------------------------------------------------------------
    def _set_status(self, new: ModelStatus) -> None:
        if new is self.status:
            return
        if new not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"{self.status.value} -> {new.value}")
        log.info("model status", old=self.status.value, new=new.value, profile=self.current_profile)
        self.status = new
        MODEL_UP.set(1 if new is ModelStatus.RUNNING else 0)

    def _phase(self, phase: SwitchPhase) -> None:
        if self.switch is not None:
            self.switch.phase = phase
            self.switch.phases.append((phase, _now()))
            log.info("switch phase", target=self.switch.target, phase=phase.value)

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

    # --- readiness ------------------------------------------------------------------------------
    async def _sample_gpus(self) -> None:
        # a sample younger than half the interval (an /api/models call just probed) is reused
        await self.hardware_info(max_age_s=self.gpu_sampler.every_s / 2)

    async def _get_json(self, url: str, timeout_s: float = 2.0) -> Any | None:
        return await self.upstream.get_json(url, timeout_s)

    async def _wait_ready(self, runtime: Runtime, profile: ModelProfile) -> Readiness:
        """Poll `/health` and `/v1/models` until the profile's model answers, or fail early when
        the server exits, or at the deadline."""
        timeout_s = profile.ready_timeout_s or self.settings.model_ready_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if not await runtime.alive():
                return Readiness(
                    False, f"the server stopped while loading: {runtime.exit_detail()}"
                )
            for base in self._base_urls(profile):  # a pool serves once one instance answers
                base = base.rstrip("/")
                root = base.removesuffix("/v1")
                if not await self._health_ok(f"{root}/health"):
                    continue
                models = await self._get_json(f"{base}/models")
                ids = [m.get("id") for m in (models or {}).get("data", []) if isinstance(m, dict)]
                if profile.served_name in ids:
                    version = await self._get_json(f"{root}/version")
                    self.upstream_version = (
                        str(version.get("version")) if isinstance(version, dict) else None
                    )
                    return Readiness(True)
            if loop.time() >= deadline:
                return Readiness(False, f"the server did not become ready within {timeout_s:g}s")
            await asyncio.sleep(0.2)

    async def _health_ok(self, url: str) -> bool:
        return await self.upstream.probe(url)

    async def _launch(self, profile_id: str) -> Readiness:
        """Start a profile's server and wait until it answers; on failure leave nothing running."""
        profile = self.profiles[profile_id]
        runtime = self._runtime(self.runtime_kind(profile))
        spec = self._spec(profile_id)
        self._phase(SwitchPhase.STARTING)
        await self._retarget(profile)
        try:
            await runtime.start(spec)
        except LaunchFailed as exc:
            return Readiness(False, str(exc))
        self.active = runtime
        self._phase(SwitchPhase.LOADING)
        if self.status is ModelStatus.STARTING:
            self._set_status(ModelStatus.LOADING)
        ready = await self._wait_ready(runtime, profile)
        if not ready.ok:
            self.log_tail = await runtime.log_tail()
            await runtime.stop(self.settings.model_stop_timeout_s)
            await self.upstream.renew_pool()
            self.active = None
        return ready

    def _failed(self, error: str) -> None:
        self.error = error
        self.hint = hint_for([*self.log_tail, error])
        log.error("model server failed", error=error, hint=self.hint, log_tail=self.log_tail[-5:])

    # --- first start and adoption -------------------------------------------------------------
    async def _bring_up(self, profile_id: str) -> None:
        try:
            await self._adopt_or_start(profile_id)
        finally:
            self.upstream.forget_models()
            self.gate.open()
            self._task = None

    async def _adopt_or_start(self, profile_id: str) -> None:
        # a server left running by an earlier gateway (or an admin's last switch) is kept
        for kind in (RuntimeKind.DOCKER, RuntimeKind.PROCESS):
            wanted = [p for p in self.profiles.values() if self.runtime_kind(p) is kind]
            if not wanted:
                continue
            runtime = self._runtime(kind)
            with contextlib.suppress(Exception):
                found = await runtime.discover()
                if found in self.profiles and await runtime.adopt(self._spec(found)):
                    profile = self.profiles[found]
                    await self._retarget(profile)
                    self.active, self.current_profile = runtime, found
                    self._set_status(ModelStatus.STARTING)
                    self._set_status(ModelStatus.LOADING)
                    ready = await self._wait_ready(runtime, profile)
                    if ready.ok:
                        self._set_status(ModelStatus.RUNNING)
                        log.info("adopted the running model server", profile=found)
                        return
                    log.warning("adopted server is not healthy, restarting", error=ready.error)
                    await runtime.stop(self.settings.model_stop_timeout_s)
                    self.active = None
                    self._set_status(ModelStatus.ERROR)
        self.current_profile = profile_id
        self._set_status(ModelStatus.STARTING)
        started = time.monotonic()
        ready = await self._launch(profile_id)
        if ready.ok:
            self._set_status(ModelStatus.RUNNING)
            self.error = self.hint = None
            log.info("model server ready", profile=profile_id, seconds=time.monotonic() - started)
        else:
            self._set_status(ModelStatus.ERROR)
            self._failed(ready.error or "unknown failure")

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
        """Check and begin a switch; it runs in the background. 404 / 409 / 422 here."""
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
        async with self._lock:  # compare-and-swap: exactly one switch begins
            if self._task is not None and not self._task.done():
                what = "a switch" if self.status is ModelStatus.SWITCHING else "a model start"
                target = self.switch.target if self.switch else self.current_profile
                raise Conflict(
                    f"{what} is already in progress (to {target!r}); wait for it to finish",
                    code="switch_in_progress",
                )
            previous = self.current_profile
            self._set_status(ModelStatus.SWITCHING)
            self.switch = SwitchRecord(target=profile_id, previous=previous)
            self.switch.phases.append((SwitchPhase.STOPPING, self.switch.started_at))
            self.gate.close()
            self._task = asyncio.get_running_loop().create_task(self._run_switch(self.switch))
        return self.switch

    async def _run_switch(self, record: SwitchRecord) -> None:
        outcome = "failed"
        try:
            outcome = await self._switch_steps(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the gate closed or the status stuck
            log.exception("switch crashed")
            self._failed(f"internal error during the switch: {type(exc).__name__}: {exc}")
            self._set_status(ModelStatus.ERROR)
            record.error = self.error
        finally:
            record.finished_at = _now()
            duration = time.monotonic() - record.started_mono
            MODEL_SWITCHES.labels(outcome).inc()
            MODEL_SWITCH_DURATION.observe(duration)
            self.history.appendleft(
                {
                    "from_profile": record.previous,
                    "to_profile": record.target,
                    "started_at": _iso(record.started_at),
                    "finished_at": _iso(record.finished_at),
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
            self.upstream.forget_models()
            self.gate.open()
            self._task = None

    async def _switch_steps(self, record: SwitchRecord) -> str:
        started = time.monotonic()
        drained = await self.gate.drained(self.settings.model_stop_timeout_s)
        record.waited_drain_s = time.monotonic() - started
        if not drained:
            log.warning(
                "answers still running at the switch; they will be cut", n=self.gate.in_flight
            )
        old, self.active = self.active, None  # the supervisor must not restart what we stop
        if old is not None:
            await old.stop(self.settings.model_stop_timeout_s)
            await self.upstream.renew_pool()
        self.log_tail = []
        ready = await self._launch(record.target)
        if ready.ok:
            self.current_profile = record.target
            self.error = self.hint = None
            self._phase(SwitchPhase.RUNNING)
            self._set_status(ModelStatus.RUNNING)
            return "success"
        error = f"switch to {record.target!r} failed: {ready.error}"
        self._failed(error)
        record.error = error
        previous = record.previous
        if previous is not None and previous != record.target and previous in self.profiles:
            self._phase(SwitchPhase.ROLLING_BACK)
            tail, hint = self.log_tail, self.hint
            back = await self._launch(previous)
            self.log_tail, self.hint = tail, hint  # keep the failed server's log, not ours
            if back.ok:
                self.current_profile = previous
                self.error = f"{error}; rolled back to {previous!r}"
                record.error = self.error
                self._phase(SwitchPhase.FAILED)
                self._set_status(ModelStatus.RUNNING)
                return "rolled_back"
            self.error = f"{error}; rollback to {previous!r} failed too: {back.error}"
            record.error = self.error
        self.current_profile = None
        self._phase(SwitchPhase.FAILED)
        self._set_status(ModelStatus.ERROR)
        return "failed"

    # --- supervision ----------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Restart a server that exits on its own (seed 002 §7.7: exit 1, NCCL), with backoff."""
        failures = 0
        while True:
            await asyncio.sleep(1.0)
            runtime = self.active
            if runtime is None or self._task is not None or self.status is not ModelStatus.RUNNING:
                continue
            if await runtime.alive() or runtime is not self.active or self._task is not None:
                failures = 0
                continue
            profile_id = self.current_profile
            if profile_id is None or profile_id not in self.profiles:
                continue
            detail = runtime.exit_detail() or "exited"
            self.log_tail = await runtime.log_tail()
            self.restarts += 1
            failures += 1
            MODEL_SERVER_RESTARTS.inc()
            log.error("model server exited unexpectedly", profile=profile_id, detail=detail)
            if failures > self.settings.model_restart_max:
                self._failed(f"the model server keeps exiting ({detail}); not restarting")
                self.active = None
                self._set_status(ModelStatus.ERROR)
                continue
            self.gate.close()
            self._task = asyncio.get_running_loop().create_task(
                self._restart(profile_id, detail, delay_s=min(30.0, 2.0 ** (failures - 1)))
            )

    async def _restart(self, profile_id: str, detail: str, *, delay_s: float) -> None:
        try:
            self._set_status(ModelStatus.STARTING)
            self.error = f"the model server exited ({detail}); restarting"
            await asyncio.sleep(delay_s)
            with contextlib.suppress(Exception):
                if self.active is not None:
                    await self.active.stop(self.settings.model_stop_timeout_s)
            await self.upstream.renew_pool()
            ready = await self._launch(profile_id)
            if ready.ok:
                self._set_status(ModelStatus.RUNNING)
                self.error = None
            else:
                self._set_status(ModelStatus.ERROR)
                self._failed(ready.error or "restart failed")
        finally:
            self.upstream.forget_models()
            self.gate.open()
            self._task = None

    # --- profiles -----------------------------------------------------------------------------
    def reload_profiles(self) -> dict[str, ModelProfile]:
        try:
            profiles = load_profiles(self.settings.model_profiles_path)
        except ProfilesInvalid as exc:
            raise InvalidProfiles(f"profiles not reloaded, the old ones stay: {exc}") from exc
        if self.current_profile is not None and self.current_profile not in profiles:
            raise InvalidProfiles(
                f"profiles not reloaded: the running profile {self.current_profile!r} is missing "
                "from the file (switch away from it first)"
            )
        self.profiles, self.profiles_error = profiles, None
        log.info("model profiles reloaded", count=len(profiles))
        return profiles

    async def profile_views(self) -> dict[str, dict[str, Any]]:
        hw = await self.hardware_info()
        views = {}
        for pid, profile in self.profiles.items():
            view = profile_view(pid, profile)
            view["runtime"] = self.runtime_kind(profile).value
            compat = check_compatibility(profile, hw)
            view["compatible"] = compat.compatible
            view["incompatible_reasons"] = compat.reasons
            view["incompatible_details"] = compat.details
            views[pid] = view
        return views

    async def recommendations(self) -> dict[str, Any]:
        return recommend(self.profiles, await self.hardware_info())

    # --- status -----------------------------------------------------------------------------------
    async def status_view(self) -> dict[str, Any]:
        hw = await self.hardware_info()
        status, error = self.status.value, self.error
        served: str | None = None
        if (
            self.current_profile is None
            and self._task is None
            and not self.settings.model_default_profile
        ):
            # no managed profile: report the plain VLLM_BASE_URL server as it is
            try:
                models = await self.upstream.models()
                served, status = models[0].id, ModelStatus.RUNNING.value
            except AppError as exc:
                status, error = ModelStatus.STOPPED.value, exc.message
        elif self.status is ModelStatus.RUNNING and self.current_profile in self.profiles:
            served = self.profiles[self.current_profile].served_name
        runtime = (
            self.runtime_kind(self.profiles[self.current_profile]).value
            if self.current_profile in self.profiles
            else None
        )
        return {
            "current_profile": self.current_profile,
            "status": status,
            "runtime": runtime,
            "switching_enabled": self.switching_disabled_reason is None,
            "served_model": served,
            "upstream_version": self.upstream_version,
            "available_profiles": await self.profile_views(),
            "hardware_info": hw.to_dict(),
            "switch": self.switch.to_dict() if self.switch else None,
            "error": error,
            "hint": self.hint,
            "log_tail": self.log_tail,
            "history": list(self.history),
            "restarts": self.restarts,
            "profiles_error": self.profiles_error,
            "in_flight": self.gate.in_flight,
            "instances": self.upstream.pool.view() if self.upstream.pool is not None else None,
            "instance_retries": self.upstream.pool.retries if self.upstream.pool else None,
        }
