"""Several models at once on 2 x RTX 3090 (issue 15): the GPUs the members hold, and the
fleet's checks before a member is replaced (no server is started here)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.errors import AppError
from app.model_manager.compatibility import check_compatibility, gpus_taken, without_gpus
from app.model_manager.fleet import Fleet, fit_beside, slot_settings
from app.model_manager.hardware import HardwareInfo, parse_nvidia_smi_csv
from app.model_manager.manager import ModelManager
from app.model_manager.profiles import ModelProfile, load_profiles
from app.model_manager.state import ModelStatus, OpKind, SwitchRecord, now
from app.services.upstream import UpstreamClient
from tests.conftest import make_settings, wait_until

RECORDED = Path(__file__).parents[2] / "fixtures" / "nvidia_smi"
TWO_3090 = HardwareInfo(
    gpus=parse_nvidia_smi_csv((RECORDED / "rtx3090x2.csv").read_text()), source="nvidia-smi"
)


def profile(**kw: Any) -> ModelProfile:
    base: dict[str, Any] = {
        "name": "m",
        "model_id": "org/m",
        "hardware_requirements": {"min_vram_gb": 14},
    }
    return ModelProfile.model_validate({**base, **kw})


CHAT_GPU0 = profile(model_id="org/chat", gpu_ids=[0])
CODER_GPU1 = profile(model_id="org/coder", gpu_ids=[1])
CODER_UNPINNED = profile(model_id="org/coder")
BIG_TP2 = profile(model_id="org/big", tensor_parallel_size=2, hardware_requirements={})


def test_gpus_taken() -> None:
    assert gpus_taken([CHAT_GPU0], TWO_3090) == {0}
    assert gpus_taken([CODER_GPU1, CODER_UNPINNED], TWO_3090) == {0, 1}
    assert gpus_taken([BIG_TP2], TWO_3090) == {0, 1}
    assert gpus_taken([profile(cpu_only=True)], TWO_3090) == set()


def test_what_is_left_for_the_next_member() -> None:
    left = without_gpus(TWO_3090, gpus_taken([CHAT_GPU0], TWO_3090))
    assert [g.index for g in left.gpus] == [1]
    assert check_compatibility(CODER_GPU1, left).compatible
    assert check_compatibility(CODER_UNPINNED, left).compatible  # one GPU is enough for TP=1
    tp2 = check_compatibility(BIG_TP2, left)
    assert not tp2.compatible and tp2.details[0]["code"] == "not_enough_gpus"
    pinned0 = check_compatibility(profile(gpu_ids=[0]), left)
    assert pinned0.details[0] == {"code": "pinned_gpu_missing", "missing": [0]}


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        tmp_path,
        vllm_base_url="http://127.0.0.1:8000/v1",
        model_also_serve=["coder"],
        model_log_dir=tmp_path / "logs",
        gpu_probe="none",
    )
    primary = ModelManager(settings, UpstreamClient(settings))
    made = Fleet(settings, primary)
    profiles = {
        "chat": CHAT_GPU0,
        "coder": CODER_GPU1,
        "big": BIG_TP2,
        "other": CHAT_GPU0,
        "unpinned": CODER_UNPINNED,
    }
    for slot, current in zip(made.slots, ("chat", "coder"), strict=True):
        slot.profiles = profiles
        slot.machine.mirror(ModelStatus.RUNNING, current, None, None)  # serving it
        slot._hardware, slot._hardware_at = TWO_3090, time.monotonic() + 3600
    return made


def test_members_have_their_own_port_logs_and_container(fleet: Fleet, tmp_path: Path) -> None:
    second = fleet.slots[1].settings
    assert second.vllm_base_url == "http://127.0.0.1:8001/v1"
    assert second.model_default_profile == "coder"
    assert second.model_log_dir == tmp_path / "logs" / "slot-1"
    assert second.vllm_container_name == "vllm-server-1"
    assert fleet.slots[1].port == 8001
    assert slot_settings(fleet.settings, 2, "x").vllm_base_url.endswith(":8002/v1")


async def test_a_replacement_must_fit_beside_the_others(fleet: Fleet) -> None:
    with pytest.raises(AppError) as err:
        await fleet.request_switch("big", replace="coder")  # TP=2, GPU 0 is the chat model's
    assert err.value.status_code == 422 and err.value.code == "incompatible_hardware"
    assert err.value.extra["gpus_taken"] == [0]
    with pytest.raises(AppError) as err:
        await fleet.request_switch("other", replace="coder")  # pinned to GPU 0
    assert err.value.status_code == 422
    assert any("held by another model" in r for r in err.value.extra["reasons"])
    assert {"code": "gpu_taken", "gpus": [0]} in err.value.extra["details"]
    with pytest.raises(AppError) as err:
        await fleet.request_switch("unpinned", replace="coder")  # vLLM would take GPU 0
    assert err.value.status_code == 422
    assert err.value.extra["details"][-1] == {"code": "gpu_ids_needed", "gpus_taken": [0]}
    with pytest.raises(AppError) as err:
        await fleet.request_switch("chat", replace="coder")
    assert (err.value.status_code, err.value.code) == (409, "already_served")
    with pytest.raises(AppError) as err:
        await fleet.request_switch("big", replace="nothing")
    assert (err.value.status_code, err.value.code) == (404, "profile_not_served")


def test_fit_beside() -> None:
    assert fit_beside(CODER_GPU1, [CHAT_GPU0], TWO_3090)[0] == []
    assert fit_beside(profile(cpu_only=True), [CHAT_GPU0], TWO_3090)[0] == []
    assert fit_beside(CODER_UNPINNED, [profile(cpu_only=True)], TWO_3090)[0] == []  # alone on GPUs
    _, details, taken = fit_beside(CODER_UNPINNED, [CHAT_GPU0], TWO_3090)
    assert taken == {0} and details == [{"code": "gpu_ids_needed", "gpus_taken": [0]}]


async def test_a_member_that_does_not_fit_is_not_started(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "sim": {"name": "s", "model_id": "s", "cpu_only": True, "runtime": "external",
                            "base_url": "http://127.0.0.1:9/v1", "ready_timeout_s": 0.5},
                    "big": {"name": "b", "model_id": "b", "gpu_ids": [0], "runtime": "external",
                            "base_url": "http://127.0.0.1:9/v1"},
                    "also": {"name": "a", "model_id": "a", "gpu_ids": [0], "runtime": "external",
                             "base_url": "http://127.0.0.1:9/v1"},
                }
            }
        )
    )  # fmt: skip
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        tmp_path,
        vllm_base_url="http://127.0.0.1:8000/v1",
        model_profiles_path=path,
        model_default_profile="big",
        model_also_serve=["also"],
        model_log_dir=tmp_path / "logs",
        gpu_probe="none",
    )
    primary = ModelManager(settings, UpstreamClient(settings))
    await primary.upstream.start()
    fleet = Fleet(settings, primary)
    primary.profiles = load_profiles(path)
    fleet.slots[1]._hardware, fleet.slots[1]._hardware_at = TWO_3090, time.monotonic() + 3600
    try:
        await fleet.start()
        second = fleet.slots[1]
        assert second.status.value == "stopped" and second.current_profile is None
        assert second.error is not None and "held by another model" in second.error
        members = await fleet.members()
        assert members[1]["status"] == "stopped" and members[1]["profile"] is None
        assert "not started" in members[1]["error"]
        # the idle member, named by the profile it was configured with, can be given another
        record = await fleet.request_switch("sim", replace="also")
        assert record.target == "sim" and second.status.value == "switching"
        with pytest.raises(AppError) as err:
            await fleet.request_switch("sim", replace="also")  # one switch at a time
        assert err.value.code == "switch_in_progress"
        # nothing answers at the profile's URL: the switch ends in `error`, never stuck
        await wait_until(lambda: record.finished_at is not None, timeout=10)
        assert second.status.value == "error"
    finally:
        await fleet.stop()
        await primary.upstream.stop()


# --- review15: what a member is switching to, and switches asked at the same time ------------

CPU_ONLY = profile(model_id="org/cpu", cpu_only=True)
GPU1_OTHER = profile(model_id="org/gpu1-other", gpu_ids=[1])


def fake_switches(fleet: Fleet, begun: list[tuple[int, str]]) -> None:
    """Each slot's own request_switch: yields first (the real one probes the GPUs in a thread
    before it begins), then begins a switch (status switching, the record unfinished)."""
    for n, slot in enumerate(fleet.slots):

        async def begin(profile_id: str, slot: ModelManager = slot, n: int = n) -> SwitchRecord:
            await asyncio.sleep(0.01)
            record = SwitchRecord(target=profile_id, previous=slot.current_profile)
            slot.machine.mirror(ModelStatus.SWITCHING, slot.current_profile, record, OpKind.SWITCH)
            begun.append((n, profile_id))
            return record

        slot.request_switch = begin  # type: ignore[method-assign]


async def test_a_failed_switch_target_is_not_served_by_that_member(fleet: Fleet) -> None:
    """A member whose switch to `cpu` failed and rolled back does not serve `cpu`: another
    member may be switched to it (was 409 already_served for ever after)."""
    fleet.primary.profiles["cpu"] = CPU_ONLY
    failed = SwitchRecord(target="cpu", previous="coder", finished_at=now(), error="failed")
    fleet.slots[1].machine.mirror(ModelStatus.RUNNING, "coder", failed, None)
    begun: list[tuple[int, str]] = []
    fake_switches(fleet, begun)
    record = await fleet.request_switch("cpu", replace="chat")
    assert record.target == "cpu" and begun == [(0, "cpu")]


async def test_two_members_switched_to_one_profile_at_once(fleet: Fleet) -> None:
    """Two switches at the same time, each of another member to the same profile: one is
    refused (409 already_served), not both begun (the profile served twice)."""
    fleet.primary.profiles["cpu"] = CPU_ONLY
    begun: list[tuple[int, str]] = []
    fake_switches(fleet, begun)
    results = await asyncio.gather(
        fleet.request_switch("cpu", replace="chat"),
        fleet.request_switch("cpu", replace="coder"),
        return_exceptions=True,
    )
    assert len(begun) == 1, begun
    refused = [r for r in results if isinstance(r, AppError)]
    assert [(e.status_code, e.code) for e in refused] == [(409, "already_served")]


async def test_the_gpus_a_member_is_switching_to_are_taken(fleet: Fleet) -> None:
    """Member 1 is being switched from a CPU profile to one pinned to GPU 1: a switch of member
    0 to another GPU 1 profile meanwhile is refused (422 gpu_taken), not begun on that GPU."""
    fleet.primary.profiles["cpu"] = CPU_ONLY
    fleet.primary.profiles["gpu1-other"] = GPU1_OTHER
    to_coder = SwitchRecord(target="coder", previous="cpu")
    fleet.slots[1].machine.mirror(ModelStatus.SWITCHING, "cpu", to_coder, OpKind.SWITCH)
    begun: list[tuple[int, str]] = []
    fake_switches(fleet, begun)
    with pytest.raises(AppError) as err:
        await fleet.request_switch("gpu1-other", replace="chat")
    assert (err.value.status_code, err.value.code) == (422, "incompatible_hardware")
    assert {"code": "gpu_taken", "gpus": [1]} in err.value.extra["details"]
    assert begun == []
