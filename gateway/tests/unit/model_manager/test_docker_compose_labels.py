"""The vLLM containers the gateway creates join the compose project (labels) and rotate their
log (json-file limits). The real engine and `compose down` are in
tests/integration/test_compose_managed.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.model_manager.profiles import ModelProfile
from app.model_manager.runtimes.base import LaunchSpec
from app.model_manager.runtimes.docker import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    LABEL_MANAGED,
    LABEL_PROFILE,
    DockerRuntime,
)

SPEC = LaunchSpec("p1", ModelProfile(name="P", model_id="org/p"), "127.0.0.1", 8000, None)

# what compose put on the container it created for the vllm service
COMPOSE_MADE = {
    COMPOSE_PROJECT: "prod-chat",  # `compose -p prod-chat up`
    COMPOSE_SERVICE: "vllm",
    "com.docker.compose.container-number": "1",
    "com.docker.compose.oneoff": "False",
    "com.docker.compose.config-hash": "abc123",
    "com.docker.compose.project.working_dir": "/srv/vllm-chat",
    "com.docker.compose.version": "2.29.7",
    LABEL_MANAGED: "true",
    LABEL_PROFILE: "default-profile",
    "org.opencontainers.image.version": "0.30.0",
}


def test_outside_compose_no_compose_labels() -> None:
    config = DockerRuntime(Settings(compose_project_name=None)).container_config(SPEC)
    assert config["Labels"] == {LABEL_MANAGED: "true", LABEL_PROFILE: "p1"}


def test_first_container_gets_the_project_from_settings() -> None:
    settings = Settings(compose_project_name="vllm-chat", compose_service="vllm")
    labels = DockerRuntime(settings).container_config(SPEC)["Labels"]
    assert labels[COMPOSE_PROJECT] == "vllm-chat"
    assert labels[COMPOSE_SERVICE] == "vllm"
    assert labels["com.docker.compose.oneoff"] == "False"
    assert labels["com.docker.compose.container-number"] == "1"
    # compose lists (ps, logs, down) only containers with a config hash
    assert labels["com.docker.compose.config-hash"]
    assert labels[LABEL_PROFILE] == "p1"


def test_replacing_a_compose_container_carries_its_compose_labels() -> None:
    # the compose-made labels win over the setting (the stack was started with -p), the config
    # hash included (a later `compose up` keeps the switched model), the profile is ours
    settings = Settings(compose_project_name="vllm-chat", compose_service="vllm")
    labels = DockerRuntime(settings).container_config(SPEC, COMPOSE_MADE)["Labels"]
    assert labels[COMPOSE_PROJECT] == "prod-chat"
    assert labels["com.docker.compose.config-hash"] == "abc123"
    assert labels["com.docker.compose.project.working_dir"] == "/srv/vllm-chat"
    assert labels[LABEL_PROFILE] == "p1"
    assert "org.opencontainers.image.version" not in labels


def test_a_switch_stops_first_then_starts_with_the_labels_it_saw() -> None:
    # the manager stops the old container (phase stopping) before it starts the new one: the
    # labels seen at adoption or removal are carried over
    runtime = DockerRuntime(Settings(compose_project_name="vllm-chat", compose_service="vllm"))
    runtime._remember_compose_labels({"Config": {"Labels": COMPOSE_MADE}})
    labels = runtime.container_config(SPEC)["Labels"]
    assert labels[COMPOSE_PROJECT] == "prod-chat"
    assert labels["com.docker.compose.config-hash"] == "abc123"
    # a container that is not ours (no vllm-chat.managed) teaches nothing
    other = DockerRuntime(Settings(compose_project_name="vllm-chat"))
    other._remember_compose_labels(
        {"Config": {"Labels": {k: v for k, v in COMPOSE_MADE.items() if k != LABEL_MANAGED}}}
    )
    assert other.container_config(SPEC)["Labels"][COMPOSE_PROJECT] == "vllm-chat"


def test_another_services_labels_are_not_taken() -> None:
    settings = Settings(compose_project_name="vllm-chat", compose_service="vllm")
    other = {**COMPOSE_MADE, COMPOSE_SERVICE: "gateway"}
    labels = DockerRuntime(settings).container_config(SPEC, other)["Labels"]
    assert labels[COMPOSE_PROJECT] == "vllm-chat"
    assert labels[COMPOSE_SERVICE] == "vllm"
    assert labels["com.docker.compose.config-hash"] != "abc123"


def test_log_rotation_limits() -> None:
    settings = Settings(log_max_size="512k", log_max_file=3)
    host = DockerRuntime(settings).container_config(SPEC)["HostConfig"]
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "512k", "max-file": "3"},
    }
    assert settings.log_max_bytes == 512 * 1024
    assert Settings(log_max_size="2g").log_max_bytes == 2 * 1024**3
    assert Settings(log_max_size="1000").log_max_bytes == 1000
    assert Settings(log_max_size="20M").log_max_bytes == 20 * 1024**2
    with pytest.raises(ValidationError):
        Settings(log_max_size="20 MB")


def test_hf_cache_tilde_is_the_hosts_home() -> None:
    def source(**kw: str | None) -> str:
        return str(DockerRuntime(Settings(**kw)).container_config(SPEC)["HostConfig"]["Binds"][0])

    assert source(hf_cache_dir="~/.cache/huggingface", host_home="/home/ops") == (
        "/home/ops/.cache/huggingface:/root/.cache/huggingface"
    )
    assert source(hf_cache_dir="/srv/hf", host_home="/home/ops").startswith("/srv/hf:")
    assert source(hf_cache_dir="hf-volume", host_home="/home/ops").startswith("hf-volume:")


def test_vllm_containers_get_the_services_health_check() -> None:
    settings = Settings(docker_network="vllm-chat", model_ready_timeout_s=600)
    config = DockerRuntime(settings).container_config(SPEC)
    check = config["Healthcheck"]
    assert check["Test"][:3] == ["CMD", "python3", "-c"]
    assert "http://127.0.0.1:8000/health" in check["Test"][3]
    assert check["StartPeriod"] == 600 * 10**9  # loading may take the whole ready timeout
    # a profile with its own image may have no python3: no check rather than a false one
    own = LaunchSpec("o", ModelProfile(name="O", model_id="o", image="x/y:1"), "127.0.0.1", 1, None)
    assert "Healthcheck" not in DockerRuntime(settings).container_config(own)
