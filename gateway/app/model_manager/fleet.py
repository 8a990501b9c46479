"""Several profiles served at once (issue 15; llama-swap calls the set a group).

Built by composition: each served profile has its own `ModelManager` (a slot) with its own
host and port, model-server client, serving gate and state machine; `Fleet` is the small
object over them that the model routes, `/v1/models` and routing use. Slot 0 is the gateway's
own manager (`MODEL_DEFAULT_PROFILE` on `VLLM_BASE_URL`); slot n serves the n-th profile of
`MODEL_ALSO_SERVE` on `VLLM_BASE_URL`'s port + n. A switch replaces one member of the set
(`replace`: the profile it takes the place of; none: slot 0, as with one model).

Routing: the chat resolves a request's `model` on slot 0's client first (the hot path of one
model is unchanged); a name slot 0 does not serve is looked up in the other slots
(`UpstreamClient.route_other`), and the `ServedModel` found names the client that serves it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from yarl import URL

from app.core.config import Settings
from app.core.errors import AppError, Conflict
from app.model_manager.compatibility import check_compatibility, gpus_taken, without_gpus
from app.model_manager.gate import ModelSwitching
from app.model_manager.hardware import HardwareInfo
from app.model_manager.manager import (
    IncompatibleHardware,
    ModelManager,
    ModelStatus,
    SwitchRecord,
    read_profiles,
)
from app.model_manager.profiles import ModelProfile
from app.services.upstream import ServedModel, UpstreamClient

log = structlog.get_logger()


class NotServed(AppError):
    status_code, code = 404, "profile_not_served"


def fit_beside(
    profile: ModelProfile, others: list[ModelProfile], hw: HardwareInfo
) -> tuple[list[str], list[dict[str, Any]], set[int]]:
    """Why `profile` cannot run next to `others` (no reasons: it can), with the GPUs they hold.
    A GPU profile next to another must be pinned (`gpu_ids`): an unpinned vLLM takes GPU 0."""
    taken = gpus_taken(others, hw)
    if profile.cpu_only or not any(not o.cpu_only for o in others):
        return [], [], taken
    compat = check_compatibility(profile, without_gpus(hw, taken))
    reasons, details = list(compat.reasons), list(compat.details)
    clash = sorted(set(profile.gpu_ids or ()) & taken)
    if clash:
        reasons.append(f"GPU {', '.join(map(str, clash))} is held by another model served now")
        details.append({"code": "gpu_taken", "gpus": clash})
    if not profile.gpu_ids:
        reasons.append("pin it with gpu_ids to serve it next to another GPU model")
        details.append({"code": "gpu_ids_needed", "gpus_taken": sorted(taken)})
    return reasons, details, taken


def slot_settings(settings: Settings, n: int, profile_id: str) -> Settings:
    """Slot n's settings: its own port, log directory (pid file) and container name."""
    url = URL(settings.vllm_base_url)
    return settings.model_copy(
        update={
            "vllm_base_url": str(url.with_port((url.port or 8000) + n)),
            "model_default_profile": profile_id,
            "model_also_serve": [],
            "model_log_dir": settings.model_log_dir / f"slot-{n}",
            "vllm_container_name": f"{settings.vllm_container_name}-{n}",
        }
    )


class Fleet:
    def __init__(self, settings: Settings, primary: ModelManager) -> None:
        self.settings = settings
        self.slots: list[ModelManager] = [primary]
        self._switching = asyncio.Lock()
        for n, profile_id in enumerate(settings.model_also_serve, start=1):
            own = slot_settings(settings, n, profile_id)
            slot = ModelManager(own, UpstreamClient(own))
            slot.upstream.member_gate = slot.gate
            self.slots.append(slot)
        if len(self.slots) > 1:
            primary.upstream.route_other = self.route_other
            primary.upstream.other_models = self.other_models

    @property
    def primary(self) -> ModelManager:
        return self.slots[0]

    async def start(self) -> None:
        """Slot 0 is started by the app; the others here, each with its own client. A member
        that does not fit beside the ones before it is not started (`stopped`, `error` says why)."""
        wanted = [self.settings.model_default_profile, *self.settings.model_also_serve]
        for n, slot in enumerate(self.slots[1:], start=1):
            await slot.upstream.start()
            profiles = self.primary.profiles  # the same file, loaded by slot 0's start
            before = [profiles[p] for p in wanted[:n] if p and p in profiles]
            reasons: list[str] = []
            mine = profiles.get(wanted[n] or "")
            if mine is not None:
                reasons, _, _ = fit_beside(mine, before, await slot.hardware_info())
            if reasons:
                slot.settings = slot.settings.model_copy(update={"model_default_profile": None})
                await slot.start()
                slot.error = f"MODEL_ALSO_SERVE={wanted[n]!r} not started: " + "; ".join(reasons)
                log.error("model not started beside the others", profile=wanted[n], reasons=reasons)
                continue
            await slot.start()

    async def stop(self) -> None:
        for slot in self.slots[1:]:
            await slot.stop()
            await slot.upstream.stop()

    # --- routing ------------------------------------------------------------------------------
    def _names(self, slot: ModelManager) -> set[str]:
        """Every name a slot answers to now, or will once its switch ends."""
        names: set[str] = set()
        for pid in _held(slot):
            profile = slot.profiles.get(pid or "")
            if pid is not None and profile is not None:
                names |= {pid, profile.served_name, *profile.aliases}
        return {n.lower() for n in names}

    async def route_other(self, requested: str) -> ServedModel | None:
        """The model of another slot that answers to `requested`: None when none does. A slot
        being switched or started holds the request up to SWITCH_WAIT_S (then 503
        `model_switching`), like slot 0's gate does."""
        name = requested.strip().lower()
        for slot in self.slots[1:]:
            if name not in self._names(slot):
                continue
            if not slot.gate.is_open:
                await slot.gate.enter(self.settings.switch_wait_s)
                slot.gate.leave()
            if slot.status is not ModelStatus.RUNNING:
                raise ModelSwitching(
                    f"the model {requested!r} is not running ({slot.status.value})",
                    headers={"Retry-After": str(slot.gate.retry_after_s)},
                )
            return await slot.upstream.resolve(requested)
        return None

    async def other_models(self) -> list[ServedModel]:
        """The models the other slots serve now (a slot that does not answer is left out)."""
        found: list[ServedModel] = []
        results = await asyncio.gather(
            *(slot.upstream.models() for slot in self.slots[1:]), return_exceptions=True
        )
        for result in results:
            if isinstance(result, list):
                found.extend(result)
        return found

    def profile_for(self, model_id: str) -> ModelProfile | None:
        for slot in self.slots:
            profile = slot.profiles.get(slot.current_profile or "")
            if profile is not None and model_id in (profile.served_name, *profile.aliases):
                return profile
        return self.primary.serving_profile(model_id)

    # --- switching ----------------------------------------------------------------------------
    def _slot_of(self, profile_id: str) -> ModelManager | None:
        for slot in self.slots:
            if profile_id in _held(slot):
                return slot
        return None

    def _idle_slot_for(self, profile_id: str) -> ModelManager | None:
        """A member that serves nothing (not started beside the others, or its last switch
        failed without a rollback), named by the profile it was configured with."""
        wanted = [self.settings.model_default_profile, *self.settings.model_also_serve]
        for slot, configured in zip(self.slots, wanted, strict=True):
            if configured == profile_id and slot.current_profile is None:
                return slot
        return None

    async def request_switch(self, profile_id: str, replace: str | None = None) -> SwitchRecord:
        """Replace one member of the set: the slot serving `replace` (none: slot 0). The
        checks and the switch's start are one step (`_switching`): two switches asked at once
        cannot both pass the checks before either has begun."""
        if len(self.slots) == 1 and replace is None:
            return await self.primary.request_switch(profile_id)
        async with self._switching:
            return await self._request_switch(profile_id, replace)

    async def _request_switch(self, profile_id: str, replace: str | None) -> SwitchRecord:
        slot = self.primary if replace is None else self._slot_of(replace)
        if slot is None and replace is not None:
            slot = self._idle_slot_for(replace)
        elif slot is not None and replace is not None and slot.current_profile != replace:
            slot = None
        if slot is None:
            raise NotServed(f"profile {replace!r} is not served now; nothing to replace")
        profile = slot._require_profile(profile_id)
        holder = self._slot_of(profile_id)
        if holder is not None and holder is not slot:
            raise Conflict(
                f"profile {profile_id!r} is already served (or being started) next to this one",
                code="already_served",
            )
        # the GPUs the other members hold are not this one's to use
        # (and those a member's switch in progress is starting)
        others = [
            s.profiles[pid]
            for s in self.slots
            if s is not slot
            for pid in _held(s)
            if pid in s.profiles
        ]
        hw = await slot.hardware_info(max_age_s=1.0)
        reasons, details, taken = fit_beside(profile, others, hw)
        if reasons:
            raise IncompatibleHardware(
                f"profile {profile_id!r} cannot run next to the models served now: "
                + "; ".join(reasons),
                extra={"reasons": reasons, "details": details, "gpus_taken": sorted(taken)},
            )
        return await slot.request_switch(profile_id)

    async def reload_profiles(self) -> dict[str, ModelProfile]:
        """Re-read the profiles file for every member (the default one's in every gateway
        process, see `ModelManager.reload_everywhere`); refused (nothing changes) when a
        profile one of them serves is missing from it."""
        profiles = read_profiles(self.settings)  # once, for every member
        for slot in self.slots:  # every member's check first: refused, nothing changes
            slot.check_profiles(profiles)
        reloaded = await self.primary.reload_everywhere(profiles)
        for slot in self.slots[1:]:
            slot.reload_profiles(profiles)
        return reloaded

    # --- views --------------------------------------------------------------------------------
    async def members(self) -> list[dict[str, Any]]:
        views = []
        for n, slot in enumerate(self.slots):
            profile = slot.profiles.get(slot.current_profile or "")
            views.append(
                {
                    "slot": n,
                    "profile": slot.current_profile,
                    "status": slot.status.value,
                    "served_model": profile.served_name if profile is not None else None,
                    "base_url": slot.upstream.base_url,
                    "switch": slot.switch.to_dict() if slot.switch else None,
                    "error": slot.error,
                    "in_flight": slot.gate.in_flight,
                }
            )
        return views


def _held(slot: ModelManager) -> list[str]:
    """The profiles a member serves now or is starting: its current one, and the target of
    its switch while that is in progress (a finished switch's target is not held: a failed
    one rolled back to, or left nothing, but the current profile)."""
    held = [slot.current_profile] if slot.current_profile is not None else []
    switch = slot.switch
    if switch is not None and switch.finished_at is None and switch.target not in held:
        held.append(switch.target)
    return held
