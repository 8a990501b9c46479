"""The profiles file: the shipped one, and every way a file can be refused (with its reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.model_manager.profiles import ProfilesInvalid, load_profiles, parse_profiles

SHIPPED = Path(__file__).parents[3] / "profiles" / "profiles.yaml"


def test_shipped_profiles() -> None:
    profiles = load_profiles(SHIPPED)
    gpu = [pid for pid, p in profiles.items() if not p.cpu_only]
    assert len(gpu) >= 10
    for required in ("deepseek-r1-distill-qwen-14b", "phi3-mini", "llama3-70b-instruct"):
        assert required in profiles
    assert profiles["deepseek-r1-distill-qwen-14b"].tensor_parallel_size == 2
    assert any(p.quantization and "awq" in p.quantization for p in profiles.values())
    assert any(p.quantization and "gptq" in p.quantization for p in profiles.values())
    assert profiles["local-cpu"].cpu_only and profiles["local-cpu"].runtime == "process"
    assert profiles["simulator"].served_name == "simulator-model"
    r1 = profiles["deepseek-r1-distill-qwen-14b"]
    assert r1.reasoning_parser == "deepseek_r1" and r1.aliases == ["deepseek", "r1"]
    assert all(p.tool_call_parser for p in profiles.values() if p.enable_auto_tool_choice)


GOOD = {"name": "A", "model_id": "org/a"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "expected a non-empty mapping"),
        ([GOOD], "expected a non-empty mapping"),
        ({"profiles": {"Bad Id": GOOD}}, "profile id 'Bad Id' must be lower-case"),
        ({"profiles": {"a": "text"}}, "profile 'a' must be a mapping"),
        ({"profiles": {"a": {"name": "A"}}}, "profile 'a': model_id: Field required"),
        ({"profiles": {"a": {**GOOD, "tensor_parallel_size": 0}}}, "tensor_parallel_size"),
        ({"profiles": {"a": {**GOOD, "gpu_memory_utilization": 1.5}}}, "gpu_memory_utilization"),
        ({"profiles": {"a": {**GOOD, "max_model_len": "long"}}}, "max_model_len"),
        ({"profiles": {"a": {**GOOD, "typo_field": 1}}}, "typo_field: Extra inputs"),
        ({"profiles": {"a": {**GOOD, "runtime": "kubernetes"}}}, "runtime"),
        (
            {"profiles": {"a": {**GOOD, "runtime": "external"}}},
            "an external profile needs base_url",
        ),
        ({"profiles": {"a": {**GOOD, "gpu_ids": [1, 1]}}}, "gpu_ids must be distinct"),
        (
            {"profiles": {"a": {**GOOD, "instances": ["http://h:1/v1", "http://h:2/v1"]}}},
            "instances are for runtime: external",
        ),
        (
            {"profiles": {"a": {**GOOD, "runtime": "external", "instances": ["h:1/v1"]}}},
            "is not an http(s) URL",
        ),
        (
            {
                "profiles": {
                    "a": {
                        **GOOD,
                        "runtime": "external",
                        "instances": ["http://h/v1", "http://h/v1/"],
                    }
                }
            },
            "each URL at most once",
        ),
        (
            {"profiles": {"a": {**GOOD, "enable_auto_tool_choice": True}}},
            "enable_auto_tool_choice needs a tool_call_parser",
        ),
        ({"profiles": {"a": {**GOOD, "reasoning_parser": "x --evil"}}}, "reasoning_parser"),
        ({"profiles": {"a": {**GOOD, "max_num_seqs": 0}}}, "max_num_seqs"),
        (
            {"profiles": {"a": {**GOOD, "hardware_requirements": {"min_vram_gb": -1}}}},
            "hardware_requirements.min_vram_gb",
        ),
    ],
)
def test_refused_with_the_reason(data: Any, reason: str) -> None:
    with pytest.raises(ProfilesInvalid, match=None) as err:
        parse_profiles(data, origin="test.yaml")
    assert reason in str(err.value)
    assert str(err.value).startswith("test.yaml: ")


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ProfilesInvalid, match="cannot be read"):
        load_profiles(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("profiles:\n  a: {name: A\n")
    with pytest.raises(ProfilesInvalid, match="not valid YAML"):
        load_profiles(broken)


def test_order_and_defaults_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {"profiles": {"z": GOOD, "a": {**GOOD, "model_id": "org/b"}}}, sort_keys=False
        )
    )
    profiles = load_profiles(path)
    assert list(profiles) == ["z", "a"]
    assert profiles["a"].served_name == "org/b"
    assert profiles["z"].gpus_needed == 1


def test_a_pool_profile() -> None:
    urls = ["http://gpu-a:8000/v1/", " http://gpu-b:8000/v1"]
    profile = parse_profiles({"p": {**GOOD, "runtime": "external", "instances": urls}})["p"]
    assert profile.instances == ["http://gpu-a:8000/v1", "http://gpu-b:8000/v1"]
    assert profile.base_url is None
