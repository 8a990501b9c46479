"""The GPU probe: nvidia-smi CSV parsing on recorded outputs, and the probe as a real process."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app.model_manager.hardware import ProbeFailed, parse_nvidia_smi_csv, probe_hardware

RECORDED = Path(__file__).parents[2] / "fixtures" / "nvidia_smi"


class TestParse:
    def test_seed_two_rtx_3090(self) -> None:
        """Seed 000's sample: two 24 GB cards, 2 GB and 1 GB in use."""
        gpus = parse_nvidia_smi_csv((RECORDED / "rtx3090x2.csv").read_text())
        assert [g.index for g in gpus] == [0, 1]
        assert gpus[0].name == "GeForce RTX 3090"
        assert gpus[0].memory_total_gb == 24.0
        assert gpus[0].utilization_percent == 93
        assert gpus[1].memory_free_gb == pytest.approx(23.0)

    def test_not_available_utilization_is_none(self) -> None:
        (gpu,) = parse_nvidia_smi_csv((RECORDED / "a100_mig_na.csv").read_text())
        assert gpu.name == "NVIDIA A100-SXM4-80GB"
        assert gpu.memory_total_gb == 80.0
        assert gpu.utilization_percent is None

    def test_recorded_h200_idle_and_busy(self) -> None:
        """Recorded on a real H200: 143,771 MiB total; idle, then ~31 GB held at 100 %."""
        (idle,) = parse_nvidia_smi_csv((RECORDED / "h200_idle.csv").read_text())
        assert (idle.index, idle.name) == (0, "NVIDIA H200")
        assert idle.memory_total_gb == pytest.approx(140.4, abs=0.05)
        assert idle.memory_free_gb == pytest.approx(140.4, abs=0.05)
        assert idle.utilization_percent == 0
        (busy,) = parse_nvidia_smi_csv((RECORDED / "h200_busy.csv").read_text())
        assert busy.to_dict()["memory_used_gb"] == pytest.approx(31.2, abs=0.05)
        assert busy.utilization_percent == 100

    def test_a_name_with_commas(self) -> None:
        (gpu,) = parse_nvidia_smi_csv("3, Tesla V100, PCIe, 32GB, 32768, 100, 7\n")
        assert (gpu.index, gpu.name, gpu.memory_total_gb) == (3, "Tesla V100, PCIe, 32GB", 32.0)

    def test_blank_lines_ignored(self) -> None:
        assert parse_nvidia_smi_csv("\n\n") == ()

    @pytest.mark.parametrize(
        "text",
        [
            "0, RTX, 24576\n",
            "x, RTX, 24576, 0, 1\n",
            "0, RTX, [N/A], 0, 1\n",
            "0, RTX, lots, 0, 1\n",
        ],
    )
    def test_malformed_output_is_a_named_error(self, text: str) -> None:
        with pytest.raises(ProbeFailed, match="line 1"):
            parse_nvidia_smi_csv(text)


def _fake_nvidia_smi(bin_dir: Path, script: str) -> None:
    path = bin_dir / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class TestProbe:
    """`probe_hardware` runs the real executable found on PATH (here a script printing a
    recorded output), as on a GPU host where NVML's library is missing."""

    @pytest.fixture
    def bin_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return tmp_path

    async def test_nvidia_smi_output(self, bin_dir: Path) -> None:
        _fake_nvidia_smi(bin_dir, f'cat "{RECORDED / "rtx3090x2.csv"}"\n')
        hw = await probe_hardware("nvidia-smi")
        assert hw.error is None
        assert hw.source == "nvidia-smi"
        assert hw.gpu_count == 2
        assert hw.total_vram_gb == 48.0
        assert hw.available_vram_gb == pytest.approx(45.0)
        assert hw.to_dict()["gpus"][0]["name"] == "GeForce RTX 3090"

    async def test_query_arguments(self, bin_dir: Path) -> None:
        _fake_nvidia_smi(bin_dir, f'echo "$@" > "{bin_dir}/args"\n')
        await probe_hardware("nvidia-smi")
        assert (bin_dir / "args").read_text().split() == [
            "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
            "--format=csv,noheader,nounits",
        ]

    async def test_failing_nvidia_smi_is_an_error_not_a_crash(self, bin_dir: Path) -> None:
        _fake_nvidia_smi(
            bin_dir,
            'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA '
            'driver." >&2\nexit 9\n',
        )
        hw = await probe_hardware("nvidia-smi")
        assert hw.gpu_count == 0
        assert hw.error is not None
        assert "exited with 9" in hw.error and "could not communicate" in hw.error

    async def test_garbage_output_is_an_error(self, bin_dir: Path) -> None:
        _fake_nvidia_smi(bin_dir, "echo 'this is not csv'\n")
        hw = await probe_hardware("nvidia-smi")
        assert hw.error is not None and "expected 5 fields" in hw.error

    async def test_hanging_nvidia_smi_times_out(self, bin_dir: Path) -> None:
        _fake_nvidia_smi(bin_dir, "exec sleep 30\n")
        hw = await probe_hardware("nvidia-smi", timeout_s=0.5)
        assert hw.error is not None and "did not answer" in hw.error

    async def test_no_gpu_tools_means_no_gpus(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", "/nonexistent")
        hw = await probe_hardware("auto")  # NVML's library is not on this machine either
        assert (hw.gpu_count, hw.error, hw.source) == (0, None, "none")
        assert hw.to_dict() == {
            "gpu_count": 0,
            "total_vram_gb": 0,
            "available_vram_gb": 0,
            "gpus": [],
            "source": "none",
            "error": None,
        }

    async def test_nvml_only_reports_why(self) -> None:
        hw = await probe_hardware("nvml")
        # a host without the NVML library (this one) says so; a GPU host answers with its GPUs
        assert (hw.gpu_count > 0 and hw.error is None) or (hw.error and "NVML" in hw.error)

    async def test_probe_off(self) -> None:
        assert (await probe_hardware("none")).source == "none"
