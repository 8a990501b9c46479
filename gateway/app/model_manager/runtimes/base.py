"""The interface every runtime implements, and what a start needs to know."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol

from app.core.config import GATEWAY_DIR
from app.model_manager.profiles import ModelProfile, RuntimeKind


class LaunchFailed(RuntimeError):
    """The server could not be started at all (bad command, image missing, engine refused)."""


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    profile_id: str
    profile: ModelProfile
    host: str  # the address the gateway reaches the server at
    port: int
    hf_token: str | None = None

    def fill(self, argv: list[str], *, bind_host: str | None = None) -> list[str]:
        """Fill `{python}`, `{host}`, `{port}`, `{model_id}`, ... into a command template."""
        p = self.profile
        values = {
            "python": sys.executable,
            "gateway_dir": str(GATEWAY_DIR),
            "host": bind_host or self.host,
            "port": str(self.port),
            "model_id": p.model_id,
            "served_model_name": p.served_name,
            "max_model_len": str(p.max_model_len),
            "tensor_parallel_size": str(p.tensor_parallel_size),
            "gpu_memory_utilization": str(p.gpu_memory_utilization),
            "dtype": p.dtype,
        }
        try:
            return [arg.format_map(values) for arg in argv]
        except (KeyError, ValueError, IndexError) as exc:
            raise LaunchFailed(
                f"profile {self.profile_id!r}: bad placeholder in command ({exc}); "
                f"known: {', '.join('{' + k + '}' for k in values)}"
            ) from exc


def vllm_args(spec: LaunchSpec, *, bind_host: str) -> list[str]:
    """vLLM's OpenAI server arguments for a profile (seed 002 §5.2)."""
    p = spec.profile
    args = [
        "--model", p.model_id,
        "--served-model-name", p.served_name,
        "--host", bind_host,
        "--port", str(spec.port),
        "--max-model-len", str(p.max_model_len),
        "--tensor-parallel-size", str(p.tensor_parallel_size),
        "--gpu-memory-utilization", str(p.gpu_memory_utilization),
        "--dtype", p.dtype,
        "--swap-space", f"{p.swap_space:g}",
    ]  # fmt: skip
    if p.quantization:
        args += ["--quantization", p.quantization]
    if p.chat_template:
        args += ["--chat-template", p.chat_template]
    if p.reasoning_parser:
        args += ["--reasoning-parser", p.reasoning_parser]
    if p.tool_call_parser:
        args += ["--tool-call-parser", p.tool_call_parser]
    if p.enable_auto_tool_choice:
        args.append("--enable-auto-tool-choice")
    if p.enable_prefix_caching is not None:
        args.append(
            "--enable-prefix-caching" if p.enable_prefix_caching else "--no-enable-prefix-caching"
        )
    if p.max_num_seqs is not None:
        args += ["--max-num-seqs", str(p.max_num_seqs)]
    return args + list(p.extra_args)


class Runtime(Protocol):
    kind: RuntimeKind

    async def start(self, spec: LaunchSpec) -> None:
        """Start the server and return at once; readiness is polled by the manager."""

    async def stop(self, timeout_s: float) -> None:
        """Stop the server this runtime started or adopted (no-op when there is none)."""

    async def alive(self) -> bool:
        """Is the server process/container still running?"""

    def exit_detail(self) -> str | None:
        """Why the server ended (exit code, OOM kill), once `alive()` said False."""

    async def discover(self) -> str | None:
        """The profile id of a server this runtime finds already running (to adopt it)."""

    async def adopt(self, spec: LaunchSpec) -> bool:
        """Take over the server found by `discover()` instead of starting a new one."""

    async def log_tail(self, lines: int = 40) -> list[str]:
        """The last lines of the server's output."""

    async def close(self, *, stop_server: bool) -> None:
        """The gateway is shutting down."""
