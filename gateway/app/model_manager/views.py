"""What the model endpoints show: the status, the profiles with their compatibility, and the
snapshot of the state that the acting process shares with the others."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.core.errors import AppError
from app.model_manager.compatibility import check_compatibility, recommend
from app.model_manager.profiles import profile_view
from app.model_manager.state import ModelStatus

if TYPE_CHECKING:
    from app.model_manager.manager import ModelManager


async def profile_views(manager: ModelManager) -> dict[str, dict[str, Any]]:
    hw = await manager.hardware_info()
    views = {}
    for pid, profile in manager.profiles.items():
        view = profile_view(pid, profile)
        view["runtime"] = manager.runtime_kind(profile).value
        compat = check_compatibility(profile, hw)
        view["compatible"] = compat.compatible
        view["incompatible_reasons"] = compat.reasons
        view["incompatible_details"] = compat.details
        views[pid] = view
    return views


async def recommendations(manager: ModelManager) -> dict[str, Any]:
    return recommend(manager.profiles, await manager.hardware_info())


def shared_snapshot(manager: ModelManager) -> dict[str, Any]:
    """The state every gateway process shows and follows (written by the acting one)."""
    m = manager.machine
    return {
        "status": m.status.value,
        "current_profile": m.current_profile,
        "switch": m.switch.to_dict() if m.switch else None,
        "operation": m.op.kind.value if m.op else None,
        "error": manager.error,
        "hint": manager.hint,
        "log_tail": manager.log_tail,
        "history": list(manager.history),
        "restarts": manager.restarts,
        "upstream_version": manager.upstream_version,
        "profiles_generation": manager.profiles_generation,
    }


async def status_view(manager: ModelManager) -> dict[str, Any]:
    hw = await manager.hardware_info()
    m = manager.machine
    status, error = m.status.value, manager.error
    served: str | None = None
    current = m.current_profile
    if current is None and not m.busy and not manager.settings.model_default_profile:
        # no managed profile: report the plain VLLM_BASE_URL server as it is
        try:
            models = await manager.upstream.models()
            served, status = models[0].id, ModelStatus.RUNNING.value
        except AppError as exc:
            status, error = ModelStatus.STOPPED.value, exc.message
    elif m.status is ModelStatus.RUNNING and current in manager.profiles:
        served = manager.profiles[current].served_name
    runtime = (
        manager.runtime_kind(manager.profiles[current]).value
        if current in manager.profiles
        else None
    )
    return {
        "current_profile": current,
        "status": status,
        "runtime": runtime,
        "switching_enabled": manager.switching_disabled_reason is None,
        "served_model": served,
        "upstream_version": manager.upstream_version,
        "available_profiles": await profile_views(manager),
        "hardware_info": hw.to_dict(),
        "switch": m.switch.to_dict() if m.switch else None,
        "error": error,
        "hint": manager.hint,
        "log_tail": manager.log_tail,
        "history": list(manager.history),
        "restarts": manager.restarts,
        "profiles_error": manager.profiles_error,
        "in_flight": manager.gate.in_flight,
        "acting": manager.acting,
        "manager": manager.coordinator.describe(),
        "instances": manager.upstream.pool.view() if manager.upstream.pool is not None else None,
        "instance_retries": manager.upstream.pool.retries if manager.upstream.pool else None,
    }
