"""The README's first command, end to end, in a copy of the checkout: `./start` brings up the
gateway with the web UI and the real CPU model (Qwen2.5-Coder-0.5B on llama.cpp, through the model
manager's process runtime); chat, usage with real token counts, a switch to the simulator and back,
`./status`, and `./stop` leaving no process behind.

The copy reuses this checkout's `gateway/.venv` (the same locks, so `./start` installs nothing)
and, when built, `frontend/dist`: the fresh-machine install itself is what `.ci/run` does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import REPO_DIR
from tests.conftest import wait_until
from tests.ports import free_port


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_DIR,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO_DIR / name.decode()
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _pids_under(path: Path) -> list[int]:
    """Processes whose command line or working directory is inside `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    root = tmp_path_factory.mktemp("local-mode") / "repo"
    root.mkdir()
    _copy_checkout(root)
    (root / "gateway" / ".venv").symlink_to(REPO_DIR / "gateway" / ".venv")
    dist = REPO_DIR / "frontend" / "dist"
    if (dist / "index.html").exists():
        shutil.copytree(dist, root / "frontend" / "dist")
    elif (REPO_DIR / "frontend" / "node_modules").exists():
        (root / "frontend" / "node_modules").symlink_to(REPO_DIR / "frontend" / "node_modules")
    port = free_port()
    (root / ".env").write_text(
        f"DEPLOY_MODE=local\nGATEWAY_PORT={port}\n"
        f"VLLM_BASE_URL=http://127.0.0.1:{free_port()}/v1\nBCRYPT_ROUNDS=4\n"
    )
    yield root, port
    subprocess.run(["./stop"], cwd=root, capture_output=True, timeout=120)
    for pid in _pids_under(root):
        os.kill(pid, 9)


def _run(
    root: Path, *argv: str, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "POSTGRES_"))}
    env.pop("REDIS_URL", None)
    env.update(extra_env)
    return subprocess.run(
        list(argv), cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


async def test_start_chat_switch_status_stop(checkout: tuple[Path, int]) -> None:
    root, port = checkout
    started = _run(root, "./start")
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    assert f"http://127.0.0.1:{port}/" in started.stdout
    assert "admin / admin123" in started.stdout
    assert "model:          local-cpu (qwen2.5-coder-0.5b-instruct)" in started.stdout
    base = f"http://127.0.0.1:{port}"

    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        page = await c.get("/")
        assert page.status_code == 200 and '<div id="root"' in page.text
        token = (
            await c.post("/api/auth/login", json={"username": "admin", "password": "admin123"})
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        status = (await c.get("/api/models/status", headers=auth)).json()
        assert status["current_profile"] == "local-cpu" and status["status"] == "running"
        assert status["served_model"] == "qwen2.5-coder-0.5b-instruct"

        async def ask(question: str) -> tuple[str, dict[str, Any]]:
            body = {"messages": [{"role": "user", "content": question}], "max_tokens": 24}
            text, first = "", None
            async with c.stream("POST", "/api/chat", json=body, headers=auth) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        assert "error" not in event, event
                        first = first or event
                        for choice in event.get("choices", []):
                            text += choice.get("delta", {}).get("content") or ""
            assert first is not None
            return text, first

        answer, first = await ask("What is the capital of France? Answer in one word.")
        assert "paris" in answer.lower(), answer  # issue 13: SmolLM2 said "Alsace", or worse
        conversation = first["conversation_id"]

        async def usage_row() -> dict[str, Any] | None:
            rows = (await c.get("/api/usage", params={"group_by": "model"}, headers=auth)).json()
            for g in rows["groups"]:
                if g["key"] == "qwen2.5-coder-0.5b-instruct" and g["completion_tokens"]:
                    return dict(g)
            return None

        row = await wait_until(usage_row, timeout=20, interval=0.2)
        assert row["prompt_tokens"] > 5 and 0 < row["completion_tokens"] <= 24
        saved = (await c.get(f"/api/conversations/{conversation}", headers=auth)).json()
        assert saved["messages"][-1]["content"] == answer

        for target, served in (("simulator", "simulator-model"), ("local-cpu", None)):
            r = await c.post("/api/models/switch", json={"profile_id": target}, headers=auth)
            assert r.status_code == 202, r.text

            async def switched(target: str = target) -> dict[str, Any] | None:
                s = (await c.get("/api/models/status", headers=auth)).json()
                done = s["switch"]["finished_at"] and s["status"] != "switching"
                return s if done else None

            s = await wait_until(switched, timeout=120, interval=0.2)
            assert s["current_profile"] == target, s["error"]
            answer, first = await ask("Say hello.")
            assert answer.strip()
            if served:
                assert first["model"] == served

    status = _run(root, "./status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "model: local-cpu [process] status running" in status.stdout
    assert "health: healthy" in status.stdout

    stopped = _run(root, "./stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert await wait_until(lambda: not _pids_under(root), timeout=30)
    assert _run(root, "./status", timeout=60).returncode == 3


def _nothing_running(root: Path) -> None:
    """The tests below start from a stopped checkout, whatever the test before them left."""
    _run(root, "./stop", timeout=120)
    deadline = time.monotonic() + 30
    while _pids_under(root):
        assert time.monotonic() < deadline, f"still running: {_pids_under(root)}"
        time.sleep(0.1)  # polling for the processes to end, against the deadline above


def test_start_refuses_taken_ports_with_a_clear_message(checkout: tuple[Path, int]) -> None:
    root, _ = checkout
    _nothing_running(root)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen(1)
        port = taken.getsockname()[1]
        gateway_taken = _run(root, "./start", timeout=60, GATEWAY_PORT=str(port))
        model_taken = _run(root, "./start", timeout=60, VLLM_BASE_URL=f"http://127.0.0.1:{port}/v1")
    assert gateway_taken.returncode == 1, gateway_taken.stdout + gateway_taken.stderr
    assert f"port {port} is taken by another program" in gateway_taken.stderr
    assert "GATEWAY_PORT=<free port>" in gateway_taken.stderr
    assert model_taken.returncode == 1, model_taken.stdout + model_taken.stderr
    assert f"port {port} (VLLM_BASE_URL) is taken by another program" in model_taken.stderr
    assert not (root / ".run" / "gateway.pid").exists()
    assert not _pids_under(root)  # nothing was started


def test_compose_mode_without_an_engine_says_so(checkout: tuple[Path, int], tmp_path: Path) -> None:
    root, _ = checkout
    _nothing_running(root)
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    result = _run(root, "./start", timeout=60, DEPLOY_MODE="compose", DOCKER_HOST=nowhere)
    assert result.returncode == 1, result.stdout + result.stderr
    if shutil.which("docker"):
        assert f"no Docker engine answers at {nowhere}" in result.stderr
    else:
        assert "Docker is not installed" in result.stderr
    assert "Traceback" not in result.stderr and not _pids_under(root)


def test_scripts_answer_help_and_refuse_unknown_arguments(checkout: tuple[Path, int]) -> None:
    """`--help` on each operator script prints what it does and does nothing else (it used to
    start, stop or restart the service, or ask to delete the data); an argument the script does
    not know is refused with a message and a non-zero exit code, before anything is done."""
    root, _ = checkout
    _nothing_running(root)
    scripts = ("./start", "./stop", "./status", "scripts/restart.sh", "scripts/cleanup.sh",
               "scripts/setup.sh", "scripts/build-frontend.sh")  # fmt: skip
    for script in scripts:
        helped = _run(root, script, "--help", timeout=60)
        assert helped.returncode == 0, (script, helped.stdout, helped.stderr)
        assert helped.stdout.strip() and "==>" not in helped.stdout, (script, helped.stdout)
        assert "#" not in helped.stdout.splitlines()[0], (script, helped.stdout)
        assert not (root / ".run" / "gateway.pid").exists(), script
        assert not _pids_under(root), script
        wrong = _run(root, script, "--bogus", timeout=60)
        assert wrong.returncode != 0, (script, wrong.stdout, wrong.stderr)
        assert "unknown argument: --bogus" in wrong.stderr, (script, wrong.stderr)
        assert "Traceback" not in wrong.stderr and "==>" not in wrong.stdout, (script, wrong)
        assert not (root / ".run" / "gateway.pid").exists(), script
        assert not _pids_under(root), script
    (root / "gateway" / "data").mkdir(parents=True, exist_ok=True)
    kept = root / "gateway" / "data" / "keep.txt"
    kept.write_text("data")
    for args in (("-h",), ("--yes", "--bogus"), ("--bogus", "--yes")):
        result = _run(root, "scripts/cleanup.sh", *args, timeout=60)
        assert result.returncode == (0 if args == ("-h",) else 1), (args, result)
        assert kept.exists(), args  # nothing deleted
    # ./logs: a missing number and a second service are told apart from a bash error
    no_number = _run(root, "./logs", "-n", timeout=60)
    assert no_number.returncode == 1 and "-n needs a number" in no_number.stderr, no_number
    assert "line " not in no_number.stderr, no_number.stderr  # not bash's own `${2:?}` message
    two = _run(root, "./logs", "gateway", "vllm", "--no-follow", timeout=60)
    assert two.returncode == 1 and "one service at a time" in two.stderr, two


def test_start_reports_a_configuration_error_at_once(checkout: tuple[Path, int]) -> None:
    """A gateway that exits at once (a bad setting) is reported when it exits, naming the
    variable; `./start` used to wait out its full 60 s for /health/live first."""
    root, _ = checkout
    _nothing_running(root)
    began = time.monotonic()
    result = _run(root, "./start", timeout=120, RETENTION_DAYS="abc")
    took = time.monotonic() - began
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RETENTION_DAYS: Input should be a valid integer" in result.stderr, result.stderr
    assert "the gateway did not come up" in result.stderr
    assert took < 40, f"./start took {took:.0f} s to notice the gateway had exited"
    assert not (root / ".run" / "gateway.pid").exists()
    assert not _pids_under(root)


async def test_a_gateway_left_as_a_zombie_counts_as_stopped(checkout: tuple[Path, int]) -> None:
    """A gateway killed with -9 whose parent never reaps it (pid 1 of a container without an
    init) stays a zombie: `kill -0` succeeds on it, so ./status said `running` and ./start
    said `already running` for a dead gateway, and ./stop waited 20 s for it to exit."""
    root, _ = checkout
    _nothing_running(root)
    zombie = subprocess.Popen(["true"])  # not waited for until the end: a zombie meanwhile
    try:
        stat = Path(f"/proc/{zombie.pid}/stat")
        assert await wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")
        (root / ".run").mkdir(exist_ok=True)
        (root / ".run" / "gateway.pid").write_text(f"{zombie.pid}\n")
        status = _run(root, "./status", timeout=60)
        assert status.returncode == 3, status.stdout + status.stderr
        assert "gateway: stopped" in status.stdout, status.stdout
        began = time.monotonic()
        stopped = _run(root, "./stop", timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert time.monotonic() - began < 15 and "did not exit" not in stopped.stderr
        assert not (root / ".run" / "gateway.pid").exists()
    finally:
        zombie.wait()


def test_a_misspelt_deploy_mode_is_refused(checkout: tuple[Path, int]) -> None:
    """DEPLOY_MODE=compse fell through to the automatic choice: on a host without a Docker
    engine ./start quietly started the local mode instead of the compose stack asked for."""
    root, _ = checkout
    _nothing_running(root)
    for script in ("./start", "./status", "./stop", "./logs"):
        result = _run(root, script, timeout=60, DEPLOY_MODE="compse")
        assert result.returncode == 1, (script, result.stdout, result.stderr)
        assert "DEPLOY_MODE must be auto, local or compose (not 'compse')" in result.stderr
        assert not (root / ".run" / "gateway.pid").exists(), script
        assert not _pids_under(root), script
