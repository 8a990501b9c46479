"""Plain hints for known reasons a model server fails to start (seed 002 §7.7)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError|No available memory for the cache", re.I),
        "the GPU ran out of memory: lower gpu_memory_utilization or max_model_len, "
        "or pick a quantized (AWQ/GPTQ) profile",
    ),
    (
        re.compile(
            r"GatedRepoError|401 Client Error|Unauthorized for url|Access to model .* restricted",
            re.I,
        ),
        "the model hub refused the download: set HUGGING_FACE_HUB_TOKEN and accept the model's "
        "license on its hub page",
    ),
    (
        re.compile(
            r"RepositoryNotFoundError|404 Client Error|not a local folder and is not a valid",
            re.I,
        ),
        "the model was not found: check the profile's model_id (or that its files are cached)",
    ),
    (
        re.compile(r"NCCL|ncclUnhandledCudaError|ncclSystemError", re.I),
        "NCCL failed between GPUs: check both GPUs are visible to the server, try "
        "NCCL_P2P_DISABLE=1 in the profile's env or --disable-custom-all-reduce in extra_args",
    ),
    (
        re.compile(r"max_model_len|max_seq_len .* larger than|exceeds the model's maximum", re.I),
        "max_model_len is larger than the model or the memory allows: lower it in the profile",
    ),
    (
        re.compile(r"could not select device driver|nvidia-container-cli|unknown runtime", re.I),
        "Docker cannot give the container GPUs: install the NVIDIA Container Toolkit",
    ),
    (
        re.compile(r"address already in use|Errno 98", re.I),
        "the model server's port is taken by another program: stop it or change VLLM_BASE_URL",
    ),
    (
        re.compile(r"No such image|pull access denied|manifest unknown", re.I),
        "the container image is not on this host: pull it (docker pull) or set VLLM_IMAGE",
    ),
    (
        re.compile(r"cannot run '.*': No such file", re.I),
        "the server program is not installed here (is vLLM installed? use the docker runtime?)",
    ),
)


def hint_for(lines: Iterable[str]) -> str | None:
    """The first known cause found in the error and the server's log tail, newest line first."""
    for line in reversed(list(lines)):
        for pattern, hint in _HINTS:
            if pattern.search(line):
                return hint
    return None
