"""The GPU gauges are sampled on a timer by the acting process only (GPU_SAMPLE_INTERVAL_S)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.core.config import Settings
from app.model_manager import manager as manager_module
from app.model_manager.hardware import GpuInfo, HardwareInfo
from app.model_manager.manager import ModelManager
from app.services.upstream import UpstreamClient
from tests.conftest import wait_until


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": "x" * 48,
        "model_profiles_path": tmp_path / "none.yaml",
        "model_default_profile": None,
        "gpu_probe": "nvidia-smi",
        "gpu_sample_interval_s": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    used = [1000.0]

    async def fake_probe(mode: str, **_: Any) -> HardwareInfo:
        calls.append(mode)
        used[0] += 1024
        gpu = GpuInfo(0, "Test GPU", 81920.0, used[0], len(calls) % 100)
        return HardwareInfo(gpus=(gpu,), source="nvidia-smi")

    monkeypatch.setattr(manager_module, "probe_hardware", fake_probe)
    return calls


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"gpu": "0"})


async def test_the_acting_manager_samples_on_its_timer(tmp_path: Path, probes: list[str]) -> None:
    manager = ModelManager(_settings(tmp_path), UpstreamClient(_settings(tmp_path)))
    await manager.start()
    try:
        await wait_until(lambda: len(probes) >= 3, timeout=10, interval=0.01)
        first = _gauge("gpu_memory_used_bytes")
        await wait_until(lambda: _gauge("gpu_memory_used_bytes") != first, timeout=10)
        assert _gauge("gpu_memory_total_bytes") == 81920.0 * 1024 * 1024
        assert set(probes) == {"nvidia-smi"}
    finally:
        await manager.stop()
    count = len(probes)
    await asyncio.sleep(0.2)  # stopped: no further sample (a fixed wait to show an absence)
    assert len(probes) == count


async def test_a_process_that_does_not_act_does_not_sample(
    tmp_path: Path, probes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ModelManager, "acting", property(lambda self: False))
    manager = ModelManager(_settings(tmp_path), UpstreamClient(_settings(tmp_path)))
    await manager.start()
    try:
        await asyncio.sleep(0.3)  # six intervals: an absence can only be shown by waiting
        assert probes == []
        await manager.hardware_info()  # on demand it still probes (an /api/models call)
        assert probes == ["nvidia-smi"]
    finally:
        await manager.stop()


@pytest.mark.parametrize(
    "overrides", [{"gpu_sample_interval_s": 0}, {"gpu_probe": "none"}], ids=["off", "no-probe"]
)
async def test_off(tmp_path: Path, probes: list[str], overrides: dict[str, Any]) -> None:
    manager = ModelManager(_settings(tmp_path, **overrides), UpstreamClient(_settings(tmp_path)))
    await manager.start()
    try:
        assert manager.gpu_sampler.every_s == 0
        await asyncio.sleep(0.2)
        assert probes == []
    finally:
        await manager.stop()
