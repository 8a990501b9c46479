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


@dataclass
class SimProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode


def start_simulator(log: Path, *args: str, deadline_s: float = 20.0) -> SimProcess:
    """Start ``python -m simulator`` and return once ``/health`` answers 200."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=GATEWAY_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    sim = SimProcess(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=sim.url, timeout=0.5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"simulator exited early:\n{sim.output()}")
            try:
                if client.get("/health").status_code == 200:
                    return sim
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sim.stop()
                raise RuntimeError(f"simulator not healthy in {deadline_s}s:\n{sim.output()}")
            time.sleep(0.02)  # polling /health against the deadline above
