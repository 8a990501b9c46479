"""Can this host serve a profile? Each failing check is named, with the numbers (SPEC §6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from app.model_manager.hardware import Compatibility, GpuInfo, HardwareInfo
from app.model_manager.profiles import ModelProfile


def _gpus_used(profile: ModelProfile, hw: HardwareInfo) -> list[GpuInfo]:
    if profile.gpu_ids:
        by_index = {g.index: g for g in hw.gpus}
        return [by_index[i] for i in profile.gpu_ids if i in by_index]
    return list(hw.gpus[: profile.gpus_needed])


def gpus_taken(profiles: Iterable[ModelProfile], hw: HardwareInfo) -> set[int]:
    """The GPUs that profiles already running hold: their pinned `gpu_ids`, else the first free
    ones they would use (vLLM's order), `gpus_needed` of them."""
    taken: set[int] = set()
    for profile in profiles:
        if profile.cpu_only:
            continue
        if profile.gpu_ids:
            taken |= set(profile.gpu_ids)
        else:
            free = [g.index for g in hw.gpus if g.index not in taken]
            taken |= set(free[: profile.gpus_needed])
    return taken


def without_gpus(hw: HardwareInfo, taken: set[int]) -> HardwareInfo:
    """The host as a new profile sees it when other profiles hold `taken` (issue 15: several
    models at once)."""
    if not taken:
        return hw
    return dataclasses.replace(hw, gpus=tuple(g for g in hw.gpus if g.index not in taken))


def check_compatibility(profile: ModelProfile, hw: HardwareInfo) -> Compatibility:
    if profile.cpu_only:
        return Compatibility(True, True, True, True)
    reasons: list[str] = []
    # the same reasons as data (a code and its numbers), for clients that word them themselves
    details: list[dict[str, Any]] = []

    def reason(text: str, code: str, **params: Any) -> None:
        reasons.append(text)
        details.append({"code": code, **params})

    needed = profile.gpus_needed
    if hw.error and not hw.gpus:
        reason(f"the GPU probe failed: {hw.error}", "gpu_probe_failed", error=hw.error)
    sufficient_gpus = hw.gpu_count >= needed
    if not sufficient_gpus:
        reason(
            f"needs {needed} GPU{'s' if needed != 1 else ''} "
            f"(tensor parallel {profile.tensor_parallel_size}), found {hw.gpu_count}",
            "not_enough_gpus",
            needed=needed,
            tensor_parallel=profile.tensor_parallel_size,
            found=hw.gpu_count,
        )
    if profile.gpu_ids:
        missing = sorted(set(profile.gpu_ids) - {g.index for g in hw.gpus})
        if missing:
            sufficient_gpus = False
            reason(
                f"pinned to GPU {', '.join(map(str, missing))}, which is not present",
                "pinned_gpu_missing",
                missing=missing,
            )
    used = _gpus_used(profile, hw)
    need_gb = profile.hardware_requirements.min_vram_gb
    total_gb = sum(g.memory_total_gb for g in used)
    sufficient_vram = total_gb >= need_gb and (bool(used) or need_gb == 0)
    if not sufficient_vram:
        reason(
            f"needs {need_gb:g} GB of GPU memory, the GPUs it would use have {total_gb:.1f} GB",
            "not_enough_vram",
            needed_gb=need_gb,
            available_gb=round(total_gb, 1),
        )
    # vLLM takes `gpu_memory_utilization` of every GPU it uses: the model's share of each must fit
    per_gpu_fit = True
    if used and need_gb:
        share = need_gb / max(1, len(used))
        for gpu in used:
            usable = gpu.memory_total_gb * profile.gpu_memory_utilization
            if usable < share:
                per_gpu_fit = False
                reason(
                    f"GPU {gpu.index} ({gpu.name}): {profile.gpu_memory_utilization:g} x "
                    f"{gpu.memory_total_gb:.1f} GB = {usable:.1f} GB usable, needs {share:.1f} GB",
                    "gpu_share_too_small",
                    gpu=gpu.index,
                    name=gpu.name,
                    utilization=profile.gpu_memory_utilization,
                    total_gb=round(gpu.memory_total_gb, 1),
                    usable_gb=round(usable, 1),
                    needed_gb=round(share, 1),
                )
    return Compatibility(
        compatible=not reasons,
        sufficient_gpus=sufficient_gpus,
        sufficient_vram=sufficient_vram,
        per_gpu_fit=per_gpu_fit,
        reasons=reasons,
        details=details,
    )


def recommend(profiles: Mapping[str, ModelProfile], hw: HardwareInfo) -> dict[str, Any]:
    """Compatible profiles ranked: GPU profiles whose recommended memory fits first, the larger
    model first; then those fitting only their minimum; CPU-only profiles last."""
    results = {pid: check_compatibility(p, hw) for pid, p in profiles.items()}
    compatible = [pid for pid, c in results.items() if c.compatible]

    def rank(pid: str) -> tuple[int, float]:
        req = profiles[pid].hardware_requirements
        if profiles[pid].cpu_only:
            return (2, 0.0)
        fits_recommended = req.recommended_vram_gb <= hw.total_vram_gb
        return (0 if fits_recommended else 1, -req.min_vram_gb)

    return {
        "current_hardware": hw.to_dict(),
        "recommended_profiles": sorted(compatible, key=rank),
        "compatible_profiles": compatible,
        "incompatible_profiles": [pid for pid, c in results.items() if not c.compatible],
        "incompatible_reasons": {pid: c.reasons for pid, c in results.items() if not c.compatible},
        "incompatible_details": {pid: c.details for pid, c in results.items() if not c.compatible},
    }
