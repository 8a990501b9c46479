"""The model server as a child process: `vllm serve ...` on a GPU host without Docker, the local
CPU server, or the simulator. Its own process group (so its workers stop with it), output
appended to a log file (through `app.logpipe`, which rotates it by size, when a limit is set;
the pipe's reader runs in its own session, so a gateway that dies leaves the server and its log
whole), and a pid file so a restarted gateway adopts it instead of starting a
second one on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from pathlib import Path

import structlog

from app.core.config import GATEWAY_DIR
from app.model_manager.profiles import RuntimeKind
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec, vllm_args

log = structlog.get_logger()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): ask the kernel for its state
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


class ProcessRuntime:
    kind = RuntimeKind.PROCESS

    def __init__(self, log_dir: Path, *, log_max_bytes: int = 0, log_max_file: int = 5) -> None:
        self.log_dir = log_dir
        self.log_max_bytes = log_max_bytes  # 0: one growing file
        self.log_max_file = log_max_file
        self.log_pipe: asyncio.subprocess.Process | None = None
        self.pid_file = log_dir / "model-server.pid"
        self.proc: asyncio.subprocess.Process | None = None
        self.adopted_pid: int | None = None
        self.log_path: Path | None = None
        self._exit: str | None = None

    def _argv(self, spec: LaunchSpec) -> list[str]:
        if spec.profile.command:
            return spec.fill(spec.profile.command)
        return ["vllm", "serve", spec.profile.model_id, *vllm_args(spec, bind_host=spec.host)[2:]]

    def _env(self, spec: LaunchSpec) -> dict[str, str]:
        env = dict(os.environ)
        # the gateway's own settings are not the server's business (and may hold secrets)
        for name in ("JWT_SECRET", "DATABASE_URL", "POSTGRES_PASSWORD", "ADMIN_PASSWORD"):
            env.pop(name, None)
        if spec.profile.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.profile.gpu_ids))
        if spec.hf_token:
            env["HUGGING_FACE_HUB_TOKEN"] = env["HF_TOKEN"] = spec.hf_token
        env.update(spec.profile.env)
        return env

    async def start(self, spec: LaunchSpec) -> None:
        argv = self._argv(spec)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{spec.profile_id}.log"
        self._exit = None
        with self.log_path.open("ab") as out:
            out.write(f"\n=== starting {spec.profile_id}: {' '.join(argv)}\n".encode())
        read_fd, write_fd = await self._log_writer(self.log_path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=GATEWAY_DIR,
                env=self._env(spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its workers too
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(write_fd)  # the server holds it now; the reader sees EOF when it ends
            if read_fd is not None:
                os.close(read_fd)
        self.adopted_pid = None
        self.pid_file.write_text(f"{self.proc.pid} {spec.profile_id}\n")
        log.info("model server process started", pid=self.proc.pid, profile=spec.profile_id)

    async def _log_writer(self, path: Path) -> tuple[int | None, int]:
        """(our copy of the pipe's read end or None, the fd the server writes its output to)."""
        if self.log_max_bytes <= 0:
            return None, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        read_fd, write_fd = os.pipe()
        try:
            self.log_pipe = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.logpipe",
                str(path),
                f"--max-size={self.log_max_bytes}",
                f"--max-file={self.log_max_file}",
                cwd=GATEWAY_DIR,
                stdin=read_fd,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # outlives a gateway that is killed, like the server
            )
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            log.warning("log rotation unavailable, the model server's log grows unbounded")
            return None, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return read_fd, write_fd

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        return self.adopted_pid

    async def alive(self) -> bool:
        if self.proc is not None:
            if self.proc.returncode is None:
                return True
            self._exit = self._exit or f"exited with code {self.proc.returncode}"
            return False
        if self.adopted_pid is not None:
            if _pid_alive(self.adopted_pid):
                return True
            self._exit = self._exit or "the adopted server process has exited"
            return False
        return False

    def exit_detail(self) -> str | None:
        return self._exit

    async def stop(self, timeout_s: float) -> None:
        pid = self.pid
        if pid is None:
            return
        proc, self.proc, self.adopted_pid = self.proc, None, None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if not await self._wait_gone(pid, proc, timeout_s):
            log.warning("model server ignored SIGTERM, killing it", pid=pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            await self._wait_gone(pid, proc, 5.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    @staticmethod
    async def _wait_gone(
        pid: int, proc: asyncio.subprocess.Process | None, timeout_s: float
    ) -> bool:
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
                return True
            except TimeoutError:
                return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while _pid_alive(pid):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _pid_file(self) -> tuple[int, str] | None:
        try:
            pid_text, profile_id = self.pid_file.read_text().split()[:2]
            return int(pid_text), profile_id
        except (OSError, ValueError):
            return None

    async def discover(self) -> str | None:
        found = self._pid_file()
        if found is None or not _pid_alive(found[0]):
            return None
        return found[1]

    async def adopt(self, spec: LaunchSpec) -> bool:
        found = self._pid_file()
        if found is None or found[1] != spec.profile_id or not _pid_alive(found[0]):
            return False
        self.adopted_pid, self.proc = found[0], None
        self.log_path = self.log_dir / f"{spec.profile_id}.log"
        log.info("adopted a running model server process", pid=found[0], profile=spec.profile_id)
        return True

    async def log_tail(self, lines: int = 40) -> list[str]:
        path = self.log_path
        if path is None:
            return []

        def read() -> list[str]:
            try:
                with path.open("rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, fh.tell() - 64 * 1024))
                    text = fh.read().decode(errors="replace")
            except OSError:
                return []
            return list(deque(text.splitlines(), maxlen=lines))

        return await asyncio.to_thread(read)

    async def close(self, *, stop_server: bool) -> None:
        if stop_server:
            await self.stop(10.0)
