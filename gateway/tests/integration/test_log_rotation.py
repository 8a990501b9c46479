"""Local mode's size-based log rotation with real processes: a model server started by the
process runtime writes through app.logpipe, which rotates its log at line boundaries, keeps
LOG_MAX_FILE files, and ends when the server does. (`./start`'s gateway log: test_local_mode.)"""

from __future__ import annotations

import os
from pathlib import Path

from app.model_manager.profiles import ModelProfile
from app.model_manager.runtimes.base import LaunchSpec
from app.model_manager.runtimes.process import ProcessRuntime
from tests.conftest import wait_until

LINES = 3000
# 3000 numbered lines of 52 bytes, then it waits (no braces: the command is a template)
CHATTY = (
    "import sys, time\n"
    f"for i in range({LINES}): "
    "sys.stdout.write(('line %05d ' % i) + 'x' * 40 + '\\n')\n"
    "sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(120)\n"
)


async def test_model_server_log_rotates_and_the_writer_ends_with_it(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path, log_max_bytes=16 * 1024, log_max_file=3)
    profile = ModelProfile(
        name="chatty", model_id="chatty", cpu_only=True, command=["{python}", "-c", CHATTY]
    )
    spec = LaunchSpec("chatty", profile, "127.0.0.1", 9, None)
    log = tmp_path / "chatty.log"
    await runtime.start(spec)
    try:

        def finished() -> bool:
            return log.exists() and log.read_text().endswith("done\n")

        assert await wait_until(finished, timeout=30, interval=0.05)
        assert await runtime.alive()
    finally:
        await runtime.stop(5)
    files = [log, log.with_name("chatty.log.1"), log.with_name("chatty.log.2")]
    assert all(f.exists() for f in files)
    assert not log.with_name("chatty.log.3").exists()
    for f in files:
        assert f.stat().st_size <= 16 * 1024, f
    kept: list[str] = []
    for f in reversed(files):
        kept += f.read_text().splitlines()
    numbered = [line for line in kept if line.startswith("line ")]
    assert all(len(line) == 51 for line in numbered)  # no line cut at a rotation
    numbers = [int(line.split()[1]) for line in numbered]
    # the newest lines, in order, none missing; the oldest rotated away
    assert numbers == list(range(numbers[0], LINES)) and numbers[0] > 0
    assert kept[-1] == "done"
    # the pipe's reader saw the server's end and exited by itself
    pipe = runtime.log_pipe
    assert pipe is not None
    assert await wait_until(lambda: pipe.returncode is not None, timeout=10, interval=0.05)
    assert pipe.returncode == 0


async def test_no_limit_is_one_growing_file(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path, log_max_bytes=0)
    profile = ModelProfile(
        name="quiet", model_id="quiet", cpu_only=True,
        command=["{python}", "-c", "print('hello from the server', flush=True)"],
    )  # fmt: skip
    await runtime.start(LaunchSpec("quiet", profile, "127.0.0.1", 9, None))
    log = tmp_path / "quiet.log"
    assert await wait_until(
        lambda: "hello from the server" in log.read_text(), timeout=20, interval=0.05
    )
    await runtime.stop(5)
    assert runtime.log_pipe is None
    assert sorted(os.listdir(tmp_path)) == ["quiet.log"]
