"""Pure parts of the runtimes and the manager: the serving gate, the Docker container config,
command templates, failure hints and the transition table."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.core.config import GATEWAY_DIR, Settings
from app.model_manager.gate import ModelSwitching, ServingGate
from app.model_manager.hints import hint_for
from app.model_manager.manager import TRANSITIONS, ModelStatus
from app.model_manager.profiles import ModelProfile
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec
from app.model_manager.runtimes.docker import LABEL_MANAGED, LABEL_PROFILE, DockerRuntime
from app.model_manager.runtimes.process import ProcessRuntime

DEEPSEEK = ModelProfile(
    name="DeepSeek",
    model_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    served_model_name="deepseek-r1",
    max_model_len=8192,
    tensor_parallel_size=2,
    gpu_memory_utilization=0.9,
    dtype="bfloat16",
    quantization="awq",
    extra_args=["--enforce-eager"],
    env={"NCCL_P2P_DISABLE": "1"},
)


def spec(profile: ModelProfile = DEEPSEEK) -> LaunchSpec:
    return LaunchSpec("deepseek", profile, host="127.0.0.1", port=8000, hf_token="hf_secret")


class TestServingGate:
    async def test_open_gate_passes_and_counts(self) -> None:
        gate = ServingGate()
        await gate.enter(0)
        assert gate.in_flight == 1
        gate.leave()
        assert gate.in_flight == 0
        assert await gate.drained(0.01)

    async def test_closed_gate_waits_then_passes_when_opened(self) -> None:
        gate = ServingGate()
        gate.close()
        entered = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        assert not entered.done()
        gate.open()
        await asyncio.wait_for(entered, 1)
        assert gate.in_flight == 1

    async def test_closed_gate_gives_503_with_retry_after(self) -> None:
        gate = ServingGate()
        gate.close()
        with pytest.raises(ModelSwitching) as err:
            await gate.enter(0.05)
        assert err.value.status_code == 503
        assert err.value.code == "model_switching"
        assert err.value.headers["Retry-After"] == "10"
        assert gate.in_flight == 0

    async def test_drain_waits_for_requests_inside(self) -> None:
        gate = ServingGate()
        await gate.enter(0)
        assert not await gate.drained(0.05)
        asyncio.get_running_loop().call_later(0.05, gate.leave)
        assert await gate.drained(2)


class TestDockerConfig:
    def test_vllm_container(self) -> None:
        settings = Settings(
            docker_network="vllm-net", hf_cache_dir="/srv/hf", vllm_image="vllm/vllm-openai:v0.6"
        )
        config = DockerRuntime(settings).container_config(spec())
        assert config["Image"] == "vllm/vllm-openai:v0.6"
        cmd = config["Cmd"]
        assert cmd[:4] == ["--model", DEEPSEEK.model_id, "--served-model-name", "deepseek-r1"]
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - on its own network
        assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
        assert cmd[cmd.index("--quantization") + 1] == "awq"
        assert cmd[-1] == "--enforce-eager"
        assert config["Labels"] == {LABEL_MANAGED: "true", LABEL_PROFILE: "deepseek"}
        host = config["HostConfig"]
        assert host["NetworkMode"] == "vllm-net"
        assert host["DeviceRequests"] == [
            {"Driver": "nvidia", "Capabilities": [["gpu"]], "Count": 2}
        ]
        assert host["Binds"] == ["/srv/hf:/root/.cache/huggingface"]
        assert "NCCL_P2P_DISABLE=1" in config["Env"]
        assert "HUGGING_FACE_HUB_TOKEN=hf_secret" in config["Env"]

    def test_pinned_gpus_and_host_network(self) -> None:
        pinned = DEEPSEEK.model_copy(update={"gpu_ids": [1], "tensor_parallel_size": 1})
        config = DockerRuntime(Settings(docker_network="host")).container_config(spec(pinned))
        assert config["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1"]
        assert config["HostConfig"]["IpcMode"] == "host"
        cmd = config["Cmd"]
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1"

    def test_gpus_off_for_cpu_hosts(self) -> None:
        config = DockerRuntime(Settings(docker_gpus=False)).container_config(spec())
        assert "DeviceRequests" not in config["HostConfig"]

    def test_profile_command_and_volumes(self) -> None:
        profile = DEEPSEEK.model_copy(
            update={
                "command": ["python3", "-m", "simulator", "--port", "{port}", "--model",
                            "{served_model_name}"],
                "image": "local/sim",
                "volumes": ["/src:/app:ro"],
            }
        )  # fmt: skip
        config = DockerRuntime(Settings(hf_cache_dir="/hf")).container_config(spec(profile))
        assert config["Image"] == "local/sim"
        assert config["Cmd"] == ["python3", "-m", "simulator", "--port", "8000", "--model",
                                 "deepseek-r1"]  # fmt: skip
        assert config["HostConfig"]["Binds"] == ["/src:/app:ro", "/hf:/root/.cache/huggingface"]


class TestProcessCommand:
    def test_default_is_vllm_serve(self, tmp_path: object) -> None:
        argv = ProcessRuntime(GATEWAY_DIR)._argv(spec())
        assert argv[:3] == ["vllm", "serve", DEEPSEEK.model_id]
        assert "--model" not in argv
        assert argv[argv.index("--port") + 1] == "8000"

    def test_template_placeholders(self) -> None:
        profile = DEEPSEEK.model_copy(
            update={"command": ["{python}", "-m", "x", "--alias", "{served_model_name}",
                                "--ctx", "{max_model_len}", "--bind", "{host}:{port}"]}
        )  # fmt: skip
        assert ProcessRuntime(GATEWAY_DIR)._argv(spec(profile)) == [
            sys.executable, "-m", "x", "--alias", "deepseek-r1", "--ctx", "8192",
            "--bind", "127.0.0.1:8000",
        ]  # fmt: skip

    def test_unknown_placeholder_is_a_launch_failure(self) -> None:
        profile = DEEPSEEK.model_copy(update={"command": ["run", "{nope}"]})
        with pytest.raises(LaunchFailed, match="bad placeholder"):
            ProcessRuntime(GATEWAY_DIR)._argv(spec(profile))

    def test_environment_drops_gateway_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("JWT_SECRET", "x" * 40)
        pinned = DEEPSEEK.model_copy(update={"gpu_ids": [1]})
        env = ProcessRuntime(GATEWAY_DIR)._env(spec(pinned))
        assert "JWT_SECRET" not in env
        assert env["CUDA_VISIBLE_DEVICES"] == "1"
        assert env["HF_TOKEN"] == "hf_secret"
        assert env["NCCL_P2P_DISABLE"] == "1"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "gpu_memory"),
        ("huggingface_hub.errors.GatedRepoError: 401 Client Error.", "HUGGING_FACE_HUB_TOKEN"),
        ("RuntimeError: NCCL error: unhandled system error", "NCCL_P2P_DISABLE"),
        ("OSError: [Errno 98] Address already in use", "port is taken"),
        ('could not select device driver "nvidia" with capabilities: [[gpu]]', "Toolkit"),
    ],
)
def test_known_failures_get_a_hint(line: str, words: str) -> None:
    hint = hint_for(["INFO loading", line, "INFO shutting down"])
    assert hint is not None and words in hint


def test_unknown_failure_has_no_hint() -> None:
    assert hint_for(["segfault somewhere"]) is None


def test_every_status_can_reach_a_way_out() -> None:
    for status, targets in TRANSITIONS.items():
        assert targets, status
        if status is not ModelStatus.STOPPED:
            assert ModelStatus.STOPPED in targets or ModelStatus.ERROR in targets
    assert ModelStatus.SWITCHING in TRANSITIONS[ModelStatus.ERROR]  # an admin can always retry


def test_serving_flags_become_vllm_arguments() -> None:
    from app.model_manager.runtimes.base import vllm_args

    profile = ModelProfile(
        name="R1",
        model_id="org/r1",
        reasoning_parser="deepseek_r1",
        tool_call_parser="hermes",
        enable_auto_tool_choice=True,
        enable_prefix_caching=False,
        max_num_seqs=32,
    )
    args = vllm_args(LaunchSpec("r1", profile, "127.0.0.1", 8000, None), bind_host="127.0.0.1")
    joined = " ".join(args)
    assert "--reasoning-parser deepseek_r1" in joined
    assert "--tool-call-parser hermes --enable-auto-tool-choice" in joined
    assert "--no-enable-prefix-caching" in args and "--max-num-seqs 32" in joined
    plain = vllm_args(
        LaunchSpec("p", ModelProfile(name="P", model_id="org/p"), "127.0.0.1", 8000, None),
        bind_host="127.0.0.1",
    )
    assert not any(
        a.startswith(("--reasoning", "--tool", "--enable", "--no-", "--max-num")) for a in plain
    )
