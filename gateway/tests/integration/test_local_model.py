"""The local CPU model (`python -m app.local_model`: xllamacpp serving Qwen2.5-Coder-0.5B-Instruct)
as a real process: the OpenAI wire format the gateway relays, parallel slots, clean shutdown,
startup errors, one chat through a real gateway process with usage recorded from real tokens, and
(issue 13) right answers to simple English and Korean questions when started as the `local-cpu`
profile starts it."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.local_model.launcher import default_threads
from app.model_manager.profiles import load_profiles
from app.model_manager.runtimes.base import LaunchSpec
from tests.conftest import (
    GATEWAY_DIR,
    TEST_JWT_SECRET,
    content_of,
    gateway_env,
    read_sse,
    wait_live,
    wait_until,
)
from tests.integration.test_server_process import gateway_process
from tests.ports import free_port
from tests.sim_process import SimProcess, start_server

ALIAS = "local-model-test"
PROFILES = GATEWAY_DIR / "profiles" / "profiles.yaml"
Launcher = SimProcess
READY_DEADLINE_S = 120.0  # a few s on an idle 2-core machine; generous for a shared one


def launcher_command(port: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.local_model",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        ALIAS,
        *args,
    ]


def start_launcher(log: Path, *args: str) -> Launcher:
    """Start the launcher and return once /health answers 200 (fail early if it exits)."""
    port = free_port()
    return start_server(launcher_command(port, *args), port, log, READY_DEADLINE_S)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    lm = start_launcher(tmp_path_factory.mktemp("local_model") / "launcher.log")
    yield lm
    lm.stop()


def chat_body(content: str, max_tokens: int = 32, **extra: Any) -> dict[str, Any]:
    return {
        "model": ALIAS,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def check_stream(events: list[Any], max_tokens: int) -> dict[str, Any]:
    """The shape the gateway's relay relies on; returns the usage."""
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert all(c["model"] == ALIAS and c["object"] == "chat.completion.chunk" for c in chunks)
    assert content_of(events).strip(), events
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] in (
        "stop",
        "length",
    )
    final = chunks[-1]
    assert final["choices"] == [], final  # the usage-only chunk comes last
    usage: dict[str, Any] = final["usage"]
    assert usage["prompt_tokens"] > 5
    assert 1 <= usage["completion_tokens"] <= max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


async def stream_chat(base: str, body: dict[str, Any]) -> list[Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            return await read_sse(response)


def test_models_lists_the_alias_and_binds_the_given_host_only(launcher: Launcher) -> None:
    body = httpx.get(f"{launcher.url}/v1/models", timeout=5).json()
    assert [m["id"] for m in body["data"]] == [ALIAS]
    assert "max_model_len" not in body["data"][0]  # llama.cpp: the context is meta.n_ctx
    assert body["data"][0]["meta"]["n_ctx"] == 8192  # one shared pool: a request may use it all
    assert httpx.get(f"{launcher.url}/health", timeout=5).json() == {"status": "ok"}
    with pytest.raises(ConnectionRefusedError):  # 127.0.0.2 is loopback too, but not bound
        socket.create_connection(("127.0.0.2", launcher.port), timeout=2).close()
    assert "ready at http://127.0.0.1:" in launcher.output()
    assert f"threads={default_threads()} " in launcher.output()  # a core left to the others


def test_the_default_model_is_the_packaged_qwen(launcher: Launcher) -> None:
    body = httpx.get(f"{launcher.url}/v1/models", timeout=5).json()
    meta = body["data"][0]["meta"]
    assert 400e6 < meta["n_params"] < 700e6, meta  # Qwen 0.5B (630M with embeddings), not 135M
    assert "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" in launcher.output()


def test_the_model_s_own_chat_template_is_applied(launcher: Launcher) -> None:
    """Qwen's ChatML template from the GGUF file, with its default system prompt when the
    conversation has none, and the caller's system prompt in its place otherwise."""
    render = f"{launcher.url}/apply-template"
    user = {"role": "user", "content": "안녕하세요"}
    prompt = httpx.post(render, json={"messages": [user]}, timeout=10).json()["prompt"]
    assert prompt == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\n안녕하세요<|im_end|>\n<|im_start|>assistant\n"
    )
    system = {"role": "system", "content": "Answer in Korean."}
    prompt = httpx.post(render, json={"messages": [system, user]}, timeout=10).json()["prompt"]
    assert prompt.startswith("<|im_start|>system\nAnswer in Korean.<|im_end|>\n")
    assert "Alibaba" not in prompt


@pytest.fixture(scope="module")
def profile_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """The launcher started with the `local-cpu` profile's own command, as the model manager
    starts it (its sampling defaults included)."""
    port = free_port()
    profile = load_profiles(PROFILES)["local-cpu"]
    assert profile.command is not None
    argv = LaunchSpec("local-cpu", profile, "127.0.0.1", port).fill(profile.command)
    log = tmp_path_factory.mktemp("local_profile") / "launcher.log"
    lm = start_server(argv, port, log, READY_DEADLINE_S)
    yield lm
    lm.stop()


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the capital of France?", "Paris"),
        ("What is the chemical formula of water?", "H2O"),
        ("대한민국의 수도는 어디인가요?", "서울"),
        ("1년은 몇 개월인가요?", "12개월"),
    ],
)
async def test_the_profile_answers_simple_questions_in_english_and_korean(
    profile_launcher: Launcher, question: str, expected: str
) -> None:
    """Issue 13: SmolLM2 answered "Alsace (FRANCE) is the capital of France." and no Korean
    question right. Three seeds, the engine's sampling defaults (no temperature in the request):
    every answer must be right."""
    lm = profile_launcher
    served = load_profiles(PROFILES)["local-cpu"].served_name
    answers = []
    for seed in (1, 2, 3):
        body = {
            "model": served,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 48,
            "seed": seed,
        }
        async with httpx.AsyncClient(base_url=lm.url, timeout=120) as client:
            r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answers.append(r.json()["choices"][0]["message"]["content"])
    assert all(expected.lower() in a.lower() for a in answers), answers


async def test_streamed_chat_has_content_and_a_usage_chunk(launcher: Launcher) -> None:
    events = await stream_chat(launcher.url, chat_body("What is the capital of France?"))
    check_stream(events, 32)


async def test_errors_are_openai_shaped_statuses(launcher: Launcher) -> None:
    async with httpx.AsyncClient(base_url=launcher.url, timeout=30) as client:
        r = await client.post(
            "/v1/chat/completions",
            json=chat_body("hello " * 9000),  # more tokens than the 8192 context
        )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "exceed_context_size_error"
    assert "context" in r.json()["error"]["message"]


async def test_four_parallel_streams_all_complete_in_separate_slots(launcher: Launcher) -> None:
    mark = len(launcher.output())
    prompts = ["Name a fruit.", "Name a color.", "Name an animal.", "Name a country."]
    results = await asyncio.gather(
        *(stream_chat(launcher.url, chat_body(p, 24, ignore_eos=True)) for p in prompts)
    )
    for events in results:
        assert check_stream(events, 24)["completion_tokens"] == 24
    slots = set(re.findall(r"launch_slot_: id\s+(\d+) \|", launcher.output()[mark:]))
    assert len(slots) == 4, launcher.output()[mark:]  # all four ran at once


async def test_chat_through_a_real_gateway_records_real_tokens(
    launcher: Launcher, tmp_path: Path
) -> None:
    env = gateway_env(
        VLLM_BASE_URL=f"{launcher.url}/v1",
        SQLITE_PATH=str(tmp_path / "gateway.db"),
        JWT_SECRET=TEST_JWT_SECRET,
        ENVIRONMENT="local",
        TITLE_GENERATION="false",
        USAGE_FLUSH_INTERVAL_MS="50",
    )
    log_path = tmp_path / "gateway.log"
    with gateway_process(env, log_path) as (proc, base):
        await wait_live(base, proc, log_path)
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            r = await client.post(
                "/api/auth/login", json={"username": "admin", "password": "admin123"}
            )
            assert r.status_code == 200, r.text
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            async with client.stream(
                "POST",
                "/api/chat",
                json={
                    "messages": [{"role": "user", "content": "Say hello in one sentence."}],
                    "max_tokens": 32,
                },
            ) as response:
                assert response.status_code == 200, await response.aread()
                events = await read_sse(response)
            assert content_of(events).strip(), events
            assert events[-1] == "[DONE]"

            async def recorded() -> dict[str, Any] | None:
                report = (await client.get("/api/usage", params={"group_by": "model"})).json()
                return report if report["totals"]["requests"] >= 1 else None

            report = await wait_until(recorded, timeout=10)

            # the engine closes its connection after every stream: back-to-back and concurrent
            # requests on the gateway's pool must still all succeed (no 502)
            async def one() -> int:
                body = {
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 4,
                    "stream": True,
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    text = (await resp.aread()).decode()
                    return resp.status_code if text.rstrip().endswith("[DONE]") else -1

            statuses = []
            for _ in range(4):
                statuses += await asyncio.gather(*(one() for _ in range(4)))
            assert statuses == [200] * 16
    totals = report["totals"]
    assert totals["requests"] == 1 and totals["errors"] == 0, report
    assert totals["prompt_tokens"] > 5
    assert 1 <= totals["completion_tokens"] <= 32
    assert [g["key"] for g in report["groups"]] == [ALIAS]


def test_sigterm_stops_it_with_exit_0_and_frees_the_port(tmp_path: Path) -> None:
    lm = start_launcher(tmp_path / "launcher.log", "--ctx-size", "1024", "--n-parallel", "1")
    # a request in flight while the signal arrives
    with httpx.Client(base_url=lm.url, timeout=30) as client:
        with client.stream(
            "POST", "/v1/chat/completions", json=chat_body("Count to fifty.", 200)
        ) as response:
            next(response.iter_lines())
            lm.process.send_signal(signal.SIGTERM)
            assert lm.process.wait(timeout=20) == 0, lm.output()
    assert "SIGTERM received, stopping" in lm.output()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lm.port), timeout=2).close()
    with socket.socket() as sock:  # nothing (no leftover thread) holds the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", lm.port))
        sock.listen(1)


def run_launcher(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launcher_command(port, *args),
        cwd=GATEWAY_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_model_is_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    result = run_launcher(free_port(), "--model", str(missing))
    assert result.returncode == 2, result
    assert f"model file not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_taken_is_exit_2_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_launcher(port)
    assert result.returncode == 2, result
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_stream_events_are_single_data_lines(launcher: Launcher) -> None:
    """One `data: ` line per event, as vLLM sends: the relay's fast path applies."""
    with httpx.Client(base_url=launcher.url, timeout=60) as client:
        raw = client.post("/v1/chat/completions", json=chat_body("Hi", 8)).text
    blocks = [b for b in raw.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), raw
    assert json.loads(blocks[-2][6:])["usage"]["completion_tokens"] >= 1


def test_engine_closes_the_connection_after_every_streamed_answer(launcher: Launcher) -> None:
    """llama.cpp (xllamacpp 2026.10) ends each streamed answer by closing the TCP connection,
    though it advertises `Keep-Alive`; a non-streamed answer keeps it open. A pooled client that
    reuses the connection right away fails ("Server disconnected"), so the gateway must not reuse
    it (`Connection: close` on streamed requests) or must retry once. If this test fails after an
    engine upgrade, the workaround may go."""

    def closed_after(stream: bool) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", launcher.port, timeout=10)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps(chat_body("Hi", 4, stream=stream)),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and "timeout=" in response.getheader("Keep-Alive", "")
            assert conn.sock is not None
            conn.sock.settimeout(2.0)
            try:
                return conn.sock.recv(1) == b""  # EOF: the server closed it
            except TimeoutError:
                return False  # still open
        finally:
            conn.close()

    assert closed_after(stream=True)
    assert not closed_after(stream=False)
