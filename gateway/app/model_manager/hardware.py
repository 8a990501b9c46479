"""What GPUs this host has: NVML (nvidia-ml-py) when its library loads, else `nvidia-smi` CSV.

No GPU is a valid answer (`gpu_count: 0`); a probe that breaks is an error shown in the status,
never an exception that stops the gateway. Blocking calls run off the event loop.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

log = structlog.get_logger()

NVIDIA_SMI_QUERY = (
    "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
    "--format=csv,noheader,nounits",
)
MIB_PER_GB = 1024.0

ProbeMode = Literal["auto", "nvml", "nvidia-smi", "none"]


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mb: float
    memory_used_mb: float
    utilization_percent: int | None

    @property
    def memory_total_gb(self) -> float:
        return self.memory_total_mb / MIB_PER_GB

    @property
    def memory_free_gb(self) -> float:
        return max(0.0, self.memory_total_mb - self.memory_used_mb) / MIB_PER_GB

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_total_gb": round(self.memory_total_gb, 2),
            "memory_used_gb": round(self.memory_used_mb / MIB_PER_GB, 2),
            "memory_free_gb": round(self.memory_free_gb, 2),
            "utilization_percent": self.utilization_percent,
        }


@dataclass(frozen=True, slots=True)
class HardwareInfo:
    gpus: tuple[GpuInfo, ...] = ()
    source: str = "none"  # nvml | nvidia-smi | none
    error: str | None = None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def total_vram_gb(self) -> float:
        return sum(g.memory_total_gb for g in self.gpus)

    @property
    def available_vram_gb(self) -> float:
        return sum(g.memory_free_gb for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_count": self.gpu_count,
            "total_vram_gb": round(self.total_vram_gb, 2),
            "available_vram_gb": round(self.available_vram_gb, 2),
            "gpus": [g.to_dict() for g in self.gpus],
            "source": self.source,
            "error": self.error,
        }


class ProbeFailed(RuntimeError):
    pass


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in {"N/A", "NOT SUPPORTED"}:
        return None
    return float(text)


def parse_nvidia_smi_csv(text: str) -> tuple[GpuInfo, ...]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu
    --format=csv,noheader,nounits`. Memory is in MiB; `[N/A]` utilization becomes None."""
    gpus: list[GpuInfo] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            raise ProbeFailed(f"nvidia-smi line {number}: expected 5 fields, got {line.strip()!r}")
        # a GPU name may itself contain commas: the first field is the index, the last three
        # are numbers, everything between is the name
        index_text, name, numbers = parts[0], ", ".join(parts[1:-3]), parts[-3:]
        try:
            index = int(index_text)
            total, used, util = (_number(v) for v in numbers)
        except ValueError as exc:
            raise ProbeFailed(f"nvidia-smi line {number}: {line.strip()!r}") from exc
        if total is None:
            raise ProbeFailed(f"nvidia-smi line {number}: no memory.total in {line.strip()!r}")
        gpus.append(
            GpuInfo(
                index=index,
                name=name,
                memory_total_mb=total,
                memory_used_mb=used or 0.0,
                utilization_percent=None if util is None else int(util),
            )
        )
    return tuple(gpus)


def _probe_nvml() -> tuple[GpuInfo, ...]:
    """Blocking: run in a thread. Raises LookupError when the NVML library is not there."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise LookupError("NVML library not found") from exc
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            raw_name = pynvml.nvmlDeviceGetName(handle)
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                util = None
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name,
                    memory_total_mb=float(memory.total) / (1024 * 1024),
                    memory_used_mb=float(memory.used) / (1024 * 1024),
                    utilization_percent=util,
                )
            )
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


async def _probe_nvidia_smi(executable: str, timeout_s: float) -> tuple[GpuInfo, ...]:
    proc = await asyncio.create_subprocess_exec(
        executable,
        *NVIDIA_SMI_QUERY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise ProbeFailed(f"nvidia-smi did not answer within {timeout_s:g}s") from exc
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        raise ProbeFailed(
            f"nvidia-smi exited with {proc.returncode}: {detail[0] if detail else 'no output'}"
        )
    return parse_nvidia_smi_csv(out.decode(errors="replace"))


async def probe_hardware(mode: ProbeMode = "auto", *, timeout_s: float = 10.0) -> HardwareInfo:
    """Never raises: a failure is `HardwareInfo(error=...)`."""
    if mode == "none":
        return HardwareInfo()
    nvml_problem: str | None = None
    if mode in ("auto", "nvml"):
        try:
            return HardwareInfo(gpus=await asyncio.to_thread(_probe_nvml), source="nvml")
        except LookupError as exc:
            nvml_problem = str(exc)
        except Exception as exc:  # NVMLError (driver not loaded, ...) or a missing module
            nvml_problem = f"NVML: {type(exc).__name__}: {exc}"
        if mode == "nvml":
            return HardwareInfo(source="nvml", error=nvml_problem)
    executable = shutil.which("nvidia-smi")
    if executable is None:
        # neither NVML nor nvidia-smi: a host without NVIDIA GPUs, which is a valid answer
        return HardwareInfo(source="none")
    try:
        return HardwareInfo(
            gpus=await _probe_nvidia_smi(executable, timeout_s), source="nvidia-smi"
        )
    except (ProbeFailed, OSError) as exc:
        log.warning("GPU probe failed", error=str(exc), nvml=nvml_problem)
        return HardwareInfo(source="nvidia-smi", error=str(exc))


@dataclass(slots=True)
class Compatibility:
    compatible: bool
    sufficient_gpus: bool
    sufficient_vram: bool
    per_gpu_fit: bool
    reasons: list[str] = field(default_factory=list)
    # one per reason: {"code": ..., its numbers} (clients translate these, not the English)
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "sufficient_gpus": self.sufficient_gpus,
            "sufficient_vram": self.sufficient_vram,
            "per_gpu_fit": self.per_gpu_fit,
            "reasons": list(self.reasons),
            "details": list(self.details),
        }
