"""The local CPU model: llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) serving
Qwen2.5-Coder-0.5B-Instruct (a GGUF file shipped in parts in the packages of
`requirements-model.lock`, joined once) on 127.0.0.1.

`python -m app.local_model --port 8001 --alias qwen` serves it until SIGTERM/SIGINT; see
`launcher.py`. The package never imports `xllamacpp` at import time.
"""

from app.local_model.launcher import (
    DEFAULT_ALIAS,
    DEFAULT_MODEL,
    EXIT_STARTUP_ERROR,
    LaunchConfig,
    LaunchError,
    PackagedModel,
    SamplingDefaults,
    main,
    packaged_model_path,
)

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_MODEL",
    "EXIT_STARTUP_ERROR",
    "LaunchConfig",
    "LaunchError",
    "PackagedModel",
    "SamplingDefaults",
    "main",
    "packaged_model_path",
]
