"""Model profiles: what a model needs and how to serve it, read from one YAML file (SPEC §6).

The file is validated as a whole: one bad profile rejects the file with the reason, and the
profiles already loaded stay in use (`POST /api/models/reload`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

_PROFILE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class RuntimeKind(StrEnum):
    DOCKER = "docker"
    PROCESS = "process"
    EXTERNAL = "external"


class HardwareRequirements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_vram_gb: float = Field(default=0, ge=0)
    recommended_vram_gb: float = Field(default=0, ge=0)
    min_gpus: int = Field(default=0, ge=0)


class ModelProfile(BaseModel):
    """One way to serve one model. `runtime` unset: the gateway's MODEL_RUNTIME decides."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(min_length=1)
    model_id: str = Field(min_length=1)
    description: str = ""
    served_model_name: str | None = None
    max_model_len: int = Field(default=4096, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1, le=16)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    dtype: str = "auto"
    swap_space: float = Field(default=4, ge=0)
    quantization: str | None = None
    chat_template: str | None = None
    gpu_ids: list[int] | None = None
    aliases: list[str] = Field(default_factory=list)
    # defaults for requests that do not set them; `sampling.max_tokens` is the default bound
    sampling: dict[str, Any] = Field(default_factory=dict)
    max_tokens_ceiling: int | None = Field(default=None, ge=1)  # requests above it are capped
    # vLLM's serving flags for reasoning and tool calling (vLLM >= 0.10 names)
    reasoning_parser: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tool_call_parser: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    enable_auto_tool_choice: bool = False  # lets `tool_choice: "auto"` call tools
    enable_prefix_caching: bool | None = None  # unset: vLLM's default (on since V1)
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    hardware_requirements: HardwareRequirements = Field(default_factory=HardwareRequirements)
    runtime: RuntimeKind | None = None
    # process runtime: the argv ({python}, {host}, {port}, {model_id}, {served_model_name},
    # {max_model_len} are filled in); docker runtime: the container's command; unset: vLLM's
    command: list[str] | None = None
    image: str | None = None  # docker runtime: overrides VLLM_IMAGE
    volumes: list[str] = Field(default_factory=list)  # docker runtime: "host:container[:ro]"
    base_url: str | None = None  # external runtime: where the server already runs
    # external runtime: several servers of the same model (each `http://host:port/v1`);
    # requests go to the least busy healthy one (`services/pool.py`)
    instances: list[str] = Field(default_factory=list, max_length=64)
    ready_timeout_s: float | None = Field(default=None, gt=0)
    cpu_only: bool = False  # runs without a GPU (local CPU model, simulator)

    @field_validator("sampling")
    @classmethod
    def _sampling_max_tokens(cls, value: dict[str, Any]) -> dict[str, Any]:
        max_tokens = value.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise ValueError("sampling.max_tokens must be a positive integer")
        return value

    @model_validator(mode="after")
    def _auto_tool_choice_needs_parser(self) -> ModelProfile:
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("enable_auto_tool_choice needs a tool_call_parser")
        return self

    @field_validator("instances")
    @classmethod
    def _instance_urls(cls, value: list[str]) -> list[str]:
        urls = [u.strip().rstrip("/") for u in value]
        for url in urls:
            parsed = URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"instances: {url!r} is not an http(s) URL")
        if len(set(urls)) != len(urls):
            raise ValueError("instances: each URL at most once")
        return urls

    @field_validator("gpu_ids")
    @classmethod
    def _distinct_gpus(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(set(value)) != len(value) or any(i < 0 for i in value)):
            raise ValueError("gpu_ids must be distinct GPU indexes (0, 1, ...)")
        return value

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_id

    @property
    def gpus_needed(self) -> int:
        if self.cpu_only:
            return 0
        return max(self.tensor_parallel_size, self.hardware_requirements.min_gpus)


class ProfilesInvalid(ValueError):
    """The profiles file cannot be used; the message says why (path, profile, field)."""


def _describe(exc: ValidationError, profile_id: str) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    return f"profile {profile_id!r}: {field or 'profile'}: {first.get('msg', 'invalid')}"


def parse_profiles(data: Any, *, origin: str = "profiles") -> dict[str, ModelProfile]:
    """`{"profiles": {id: {...}}}` (or the mapping itself) → validated profiles, in file order."""
    if isinstance(data, dict) and "profiles" in data:
        data = data["profiles"]
    if not isinstance(data, dict) or not data:
        raise ProfilesInvalid(f"{origin}: expected a non-empty mapping of profile ids to profiles")
    profiles: dict[str, ModelProfile] = {}
    for profile_id, body in data.items():
        if not isinstance(profile_id, str) or not _PROFILE_ID.fullmatch(profile_id):
            raise ProfilesInvalid(
                f"{origin}: profile id {profile_id!r} must be lower-case letters, digits, "
                "'.', '_' or '-' (at most 63)"
            )
        if not isinstance(body, dict):
            raise ProfilesInvalid(f"{origin}: profile {profile_id!r} must be a mapping")
        try:
            profile = ModelProfile.model_validate(body)
        except ValidationError as exc:
            raise ProfilesInvalid(f"{origin}: {_describe(exc, profile_id)}") from exc
        if profile.runtime is RuntimeKind.EXTERNAL and not (profile.base_url or profile.instances):
            raise ProfilesInvalid(
                f"{origin}: profile {profile_id!r}: an external profile needs base_url or instances"
            )
        if profile.instances and profile.runtime is not RuntimeKind.EXTERNAL:
            raise ProfilesInvalid(
                f"{origin}: profile {profile_id!r}: instances are for runtime: external "
                "(servers someone else runs)"
            )
        profiles[profile_id] = profile
    return profiles


def load_profiles(path: Path) -> dict[str, ModelProfile]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfilesInvalid(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfilesInvalid(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    return parse_profiles(data, origin=str(path))


def profile_view(profile_id: str, profile: ModelProfile) -> dict[str, Any]:
    """The wire form of a profile (no environment values: they may hold secrets)."""
    return {
        "id": profile_id,
        "name": profile.name,
        "model_id": profile.model_id,
        "served_model_name": profile.served_name,
        "description": profile.description,
        "max_model_len": profile.max_model_len,
        "tensor_parallel_size": profile.tensor_parallel_size,
        "gpu_memory_utilization": profile.gpu_memory_utilization,
        "dtype": profile.dtype,
        "swap_space": profile.swap_space,
        "quantization": profile.quantization,
        "gpu_ids": profile.gpu_ids,
        "aliases": profile.aliases,
        "sampling": profile.sampling,
        "max_tokens_ceiling": profile.max_tokens_ceiling,
        "runtime": profile.runtime.value if profile.runtime else None,
        "instances": profile.instances,
        "cpu_only": profile.cpu_only,
        "hardware_requirements": profile.hardware_requirements.model_dump(),
    }
