"""Compatibility and recommendations (seed 000's unit scenarios, with the shipped profiles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.model_manager.compatibility import check_compatibility, recommend
from app.model_manager.hardware import GpuInfo, HardwareInfo, parse_nvidia_smi_csv
from app.model_manager.profiles import ModelProfile, load_profiles

RECORDED = Path(__file__).parents[2] / "fixtures" / "nvidia_smi"
TWO_3090 = HardwareInfo(
    gpus=parse_nvidia_smi_csv((RECORDED / "rtx3090x2.csv").read_text()), source="nvidia-smi"
)
NO_GPU = HardwareInfo()


@pytest.fixture(scope="module")
def shipped() -> dict[str, ModelProfile]:
    return load_profiles(Path(__file__).parents[3] / "profiles" / "profiles.yaml")


@pytest.fixture
def sample_profile() -> ModelProfile:
    """Seed 000's test profile: 8 GB minimum, TP 1."""
    return ModelProfile(
        name="Test Model",
        model_id="test/model",
        description="Test model for unit tests",
        max_model_len=2048,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.8,
        dtype="float16",
        swap_space=2,
        hardware_requirements={"min_vram_gb": 8, "recommended_vram_gb": 16},
    )


def one_gpu(total_gb: float) -> HardwareInfo:
    return HardwareInfo(gpus=(GpuInfo(0, "Small GPU", total_gb * 1024, 0, 0),), source="nvml")


class TestCheck:
    def test_compatible_on_two_3090(self, sample_profile: ModelProfile) -> None:
        result = check_compatibility(sample_profile, TWO_3090).to_dict()
        assert result["compatible"] is True
        assert result["sufficient_vram"] is True
        assert result["sufficient_gpus"] is True
        assert result["reasons"] == []

    def test_incompatible_on_a_4_gb_card_names_the_check(
        self, sample_profile: ModelProfile
    ) -> None:
        result = check_compatibility(sample_profile, one_gpu(4))
        assert result.compatible is False
        assert result.sufficient_vram is False
        assert result.sufficient_gpus is True
        assert result.reasons == [
            "needs 8 GB of GPU memory, the GPUs it would use have 4.0 GB",
            "GPU 0 (Small GPU): 0.8 x 4.0 GB = 3.2 GB usable, needs 8.0 GB",
        ]
        # the same reasons as data, for the UI to word in its language (issue 13 #6)
        assert result.details == [
            {"code": "not_enough_vram", "needed_gb": 8, "available_gb": 4.0},
            {
                "code": "gpu_share_too_small",
                "gpu": 0,
                "name": "Small GPU",
                "utilization": 0.8,
                "total_gb": 4.0,
                "usable_gb": 3.2,
                "needed_gb": 8.0,
            },
        ]

    def test_tensor_parallel_needs_that_many_gpus(self, shipped: dict[str, ModelProfile]) -> None:
        result = check_compatibility(shipped["deepseek-r1-distill-qwen-14b"], one_gpu(80))
        assert result.sufficient_gpus is False
        assert "needs 2 GPUs (tensor parallel 2), found 1" in result.reasons
        assert {"code": "not_enough_gpus", "needed": 2, "tensor_parallel": 2, "found": 1} in (
            result.details
        )

    def test_utilization_share_must_fit_each_gpu(self, sample_profile: ModelProfile) -> None:
        # 10 GB total is enough, but 0.8 x 10 = 8 GB usable is just enough; 0.7 is not
        assert check_compatibility(sample_profile, one_gpu(10)).compatible
        tight = sample_profile.model_copy(update={"gpu_memory_utilization": 0.7})
        result = check_compatibility(tight, one_gpu(10))
        assert (result.sufficient_vram, result.per_gpu_fit) == (True, False)

    def test_pinned_gpu_must_exist(self, shipped: dict[str, ModelProfile]) -> None:
        phi3 = shipped["phi3-mini"]
        assert phi3.gpu_ids == [1]
        assert check_compatibility(phi3, TWO_3090).compatible
        result = check_compatibility(phi3, one_gpu(24))
        assert "pinned to GPU 1, which is not present" in result.reasons
        assert {"code": "pinned_gpu_missing", "missing": [1]} in result.details

    def test_70b_unquantized_does_not_fit_48_gb(self, shipped: dict[str, ModelProfile]) -> None:
        result = check_compatibility(shipped["llama3-70b-instruct"], TWO_3090)
        assert not result.compatible
        assert result.reasons[0] == "needs 140 GB of GPU memory, the GPUs it would use have 48.0 GB"

    def test_cpu_profiles_fit_anywhere(self, shipped: dict[str, ModelProfile]) -> None:
        for pid in ("local-cpu", "simulator", "simulator-alt"):
            assert check_compatibility(shipped[pid], NO_GPU).compatible, pid

    def test_no_gpu_host(self, shipped: dict[str, ModelProfile]) -> None:
        result = check_compatibility(shipped["qwen2.5-7b-instruct"], NO_GPU)
        assert result.reasons[0] == "needs 1 GPU (tensor parallel 1), found 0"

    def test_a_failed_probe_is_a_reason(self, shipped: dict[str, ModelProfile]) -> None:
        broken = HardwareInfo(source="nvidia-smi", error="nvidia-smi exited with 9")
        result = check_compatibility(shipped["phi3-mini"], broken)
        assert result.reasons[0] == "the GPU probe failed: nvidia-smi exited with 9"
        assert result.details[0] == {
            "code": "gpu_probe_failed",
            "error": "nvidia-smi exited with 9",
        }


class TestRecommend:
    def test_two_3090(self, shipped: dict[str, ModelProfile]) -> None:
        answer = recommend(shipped, TWO_3090)
        assert answer["current_hardware"]["gpu_count"] == 2
        assert answer["incompatible_profiles"] == ["llama3-70b-instruct"]
        assert set(answer["incompatible_reasons"]) == {"llama3-70b-instruct"}
        ranked = answer["recommended_profiles"]
        assert set(ranked) == set(answer["compatible_profiles"])
        # GPU profiles before CPU ones; of those fitting their recommended memory, bigger first
        assert ranked.index("deepseek-r1-distill-qwen-14b") < ranked.index("phi3-mini")
        assert ranked[-4:] == ["local-cpu", "simulator", "simulator-alt", "simulator-reasoning"]

    def test_no_gpu_only_cpu_profiles(self, shipped: dict[str, ModelProfile]) -> None:
        answer = recommend(shipped, NO_GPU)
        assert answer["compatible_profiles"] == [
            "local-cpu",
            "simulator",
            "simulator-alt",
            "simulator-reasoning",
        ]
        assert len(answer["incompatible_profiles"]) == len(shipped) - 4
        assert all(answer["incompatible_reasons"][p] for p in answer["incompatible_profiles"])
        for p in answer["incompatible_profiles"]:
            assert len(answer["incompatible_details"][p]) == len(answer["incompatible_reasons"][p])
