"""The vLLM simulator as a real subprocess, for any test that needs a model server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.ports import free_port

# tests/ -> the gateway directory, where ``python -m simulator`` works.
GATEWAY_DIR = Path(__file__).resolve().parents[1]

# The simulator as a model profile's command (the model manager fills in the braces).
SIM_COMMAND = ["{python}", "-m", "simulator", "--host", "{host}", "--port", "{port}",
               "--model", "{served_model_name}"]  # fmt: skip


@dataclass
class SimProcess:
    """A server started by a test: the simulator, or the local CPU model's launcher."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode


def start_server(argv: list[str], port: int, log: Path, deadline_s: float) -> SimProcess:
    """Run `argv` from the gateway directory (output to `log`) and return once `/health` on
    `port` answers 200; fail with its output when it exits first or misses the deadline."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=GATEWAY_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = SimProcess(process, port, log)
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"{argv[2]} exited early ({code}):\n{server.output()}")
            try:
                if client.get("/health").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{argv[2]} not healthy in {deadline_s}s:\n{server.output()}")
            time.sleep(0.02)  # polling /health against the deadline above


def start_simulator(log: Path, *args: str, deadline_s: float = 20.0) -> SimProcess:
    """Start ``python -m simulator`` and return once ``/health`` answers 200."""
    port = free_port()
    argv = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), *args]
    return start_server(argv, port, log, deadline_s)
