"""The vLLM simulator, run as a real process and spoken to over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import wait_until
from tests.sim_process import SimProcess, start_simulator

CHAT = "/v1/chat/completions"
MODEL = "simulator-model"


def chat(content: str = "Hello there, how are you?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(raw: str) -> list[str]:
    """The ``data:`` payloads of a whole event stream, checking the framing on the way."""
    assert raw.endswith("\n\n"), raw[-50:]
    events = raw[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: "), event
        assert "\n" not in event
    return [event[len("data: ") :] for event in events]


def chunks_and_done(raw: str) -> tuple[list[dict[str, Any]], list[str]]:
    payloads = sse_events(raw)
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    return [orjson.loads(p) for p in payloads[:-1]], payloads


def content_of(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks[1:] if c["choices"]]


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/sim/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def wait_for_stats(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], within: float = 1.0
) -> dict[str, Any]:
    """Poll ``/sim/stats`` until ``check`` holds; fail when ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        current = await stats(client)
        if check(current):
            return current
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s: {current}")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------ plain endpoints
async def test_health_version_models_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.content == b""

    version = await client.get("/version")
    assert version.status_code == 200
    assert version.json()["version"].endswith("-simulator")

    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    [card] = models["data"]
    assert card["id"] == MODEL
    assert card["object"] == "model"
    assert card["owned_by"] == "vllm"
    assert card["root"] == MODEL
    assert card["parent"] is None
    assert card["max_model_len"] == 4096
    assert card["permission"][0]["object"] == "model_permission"

    await client.post(CHAT, json=chat())
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for series in (
        "vllm:num_requests_running",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "simulator_requests_total 1",
        "simulator_completed_total 1",
        "simulator_aborted_total 0",
    ):
        assert series in text
    assert re.search(
        r'vllm:generation_tokens_total\{engine="0",model_name="simulator-model"\} 16\n', text
    )

    assert (await client.get("/nope")).status_code == 404
    assert (await client.get(CHAT)).status_code == 405


# ------------------------------------------------------------------------- completions
async def test_non_stream_completion_has_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(temperature=0.7, top_p=0.9, extra_field=1))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("This is a simulated answer")
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (await stats(client))["completed_total"] == 1


async def test_stream_chunk_format_without_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    chunks, _ = chunks_and_done(response.text)

    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    assert ids.pop().startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert isinstance(chunk["created"], int)
        [choice] = chunk["choices"]
        assert choice["index"] == 0
        assert choice["logprobs"] is None
        assert "usage" not in chunk

    first = chunks[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""}
    assert first["finish_reason"] is None
    tokens = content_of(chunks)
    assert len(tokens) == 16
    assert all(tokens)
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:-1]] == [None] * 15
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_usage_chunk_only_when_asked(client: httpx.AsyncClient) -> None:
    asked = await client.post(CHAT, json=chat(stream=True, stream_options={"include_usage": True}))
    chunks, _ = chunks_and_done(asked.text)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == len(content_of(chunks[:-1])) == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"

    not_asked = await client.post(
        CHAT, json=chat(stream=True, stream_options={"include_usage": False})
    )
    chunks, _ = chunks_and_done(not_asked.text)
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_max_tokens_finishes_with_length(client: httpx.AsyncClient) -> None:
    streamed = await client.post(CHAT, json=chat(stream=True, max_tokens=3))
    chunks, _ = chunks_and_done(streamed.text)
    assert len(content_of(chunks)) == 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    whole = (await client.post(CHAT, json=chat(max_completion_tokens=5))).json()
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 5


async def test_jay_script_streams_code_at_the_set_pace(client: httpx.AsyncClient) -> None:
    request = chat("Write Python code that prints Jay, please.", stream=True)
    started = time.monotonic()
    payloads: list[str] = []
    async with client.stream("POST", CHAT, json=request, headers={"X-Sim-Fault": "itl_ms=50"}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                payloads.append(line[len("data: ") :])
    elapsed = time.monotonic() - started
    assert 3.0 <= elapsed <= 5.0, elapsed
    assert 50 <= len(payloads) <= 100, len(payloads)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    text = "".join(content_of(chunks))
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block is not None, text
    assert 'print("Jay")' in block.group(1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_jay_script_in_korean(client: httpx.AsyncClient) -> None:
    body = (await client.post(CHAT, json=chat("Jay를 출력하는 파이썬 코드 짜줘"))).json()
    text = body["choices"][0]["message"]["content"]
    assert re.search(r"[가-힣]", text)
    assert '```python\nprint("Jay")\n```' in text
    assert 60 <= body["usage"]["completion_tokens"] <= 80


# ------------------------------------------------------------------------------ faults
async def test_fail_fault_answers_the_status_with_vllm_error_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(CHAT, json=chat("hi [[sim:fail=503]]", stream=True))
    assert response.status_code == 503
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == 503

    by_header = await client.post(CHAT, json=chat(), headers={"X-Sim-Fault": "fail=429"})
    assert by_header.status_code == 429
    assert by_header.json()["error"]["code"] == 429
    current = await stats(client)
    assert current["failed_total"] == 2
    assert current["requests_total"] == 2


async def test_drop_after_breaks_the_stream(client: httpx.AsyncClient) -> None:
    tokens: list[str] = []
    lines: list[str] = []
    with pytest.raises(httpx.TransportError):
        async with client.stream(
            "POST", CHAT, json=chat("go [[sim:drop_after=3]]", stream=True)
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith("data: {"):
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        tokens.append(delta["content"])
    assert len(tokens) == 3
    assert "data: [DONE]" not in lines
    current = await wait_for_stats(client, lambda s: s["dropped_total"] == 1)
    assert current["completed_total"] == 0
    assert current["active_streams"] == 0


async def test_hang_first_stream_counts_abort(client: httpx.AsyncClient) -> None:
    timeout = httpx.Timeout(5.0, read=0.3)
    request = chat("hi [[sim:hang_first]]", stream=True)
    with pytest.raises(httpx.ReadTimeout):
        async with client.stream("POST", CHAT, json=request, timeout=timeout) as r:
            assert r.status_code == 200  # headers come at once, like vLLM
            assert (await stats(client))["active_streams"] == 1
            async for _ in r.aiter_lines():
                pytest.fail("no data expected before the first token")
    await wait_for_stats(client, lambda s: s["aborted_total"] == 1 and s["active_streams"] == 0)


async def test_hang_first_non_stream_counts_abort(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            CHAT, json=chat(), headers={"X-Sim-Fault": "hang=first"}, timeout=httpx.Timeout(0.3)
        )
    await wait_for_stats(client, lambda s: s["aborted_total"] == 1 and s["active_requests"] == 0)


async def test_hang_after_sends_tokens_then_hangs(client: httpx.AsyncClient) -> None:
    tokens: list[str] = []
    timeout = httpx.Timeout(5.0, read=0.3)
    request = chat("hi [[sim:hang_after=2]]", stream=True)
    with pytest.raises(httpx.ReadTimeout):
        async with client.stream("POST", CHAT, json=request, timeout=timeout) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    content = orjson.loads(line[6:])["choices"][0]["delta"].get("content")
                    if content:
                        tokens.append(content)
    assert len(tokens) == 2
    await wait_for_stats(client, lambda s: s["aborted_total"] == 1)


async def test_client_disconnect_mid_stream_counts_abort(client: httpx.AsyncClient) -> None:
    received = 0
    request = chat("tell me more [[sim:itl_ms=100; tokens=50]]", stream=True)
    async with client.stream("POST", CHAT, json=request) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 3:
                break  # leaving the block closes the connection mid-stream
    assert (await stats(client))["completed_total"] == 0
    current = await wait_for_stats(
        client, lambda s: s["aborted_total"] == 1 and s["active_streams"] == 0
    )
    assert current["completed_total"] == 0


async def test_client_disconnect_during_ttft_counts_abort(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(CHAT, json=chat("[[sim:ttft_ms=5000]] hello"), timeout=httpx.Timeout(0.3))
    await wait_for_stats(client, lambda s: s["aborted_total"] == 1)


async def test_paced_stream_keeps_ttft_and_itl(client: httpx.AsyncClient) -> None:
    request = chat("[[sim:ttft_ms=200,itl_ms=20,tokens=10]] hi", stream=True)
    started = time.monotonic()
    first_token: float | None = None
    count = 0
    async with client.stream("POST", CHAT, json=request) as r:
        async for line in r.aiter_lines():
            is_token = line.startswith("data: {") and '"content":""' not in line
            if first_token is None and is_token:
                first_token = time.monotonic() - started
            count += line.startswith("data: ")
    total = time.monotonic() - started
    assert first_token is not None
    assert 0.18 <= first_token <= 0.6, first_token
    assert 0.36 <= total <= 1.2, total  # 200 ms + 9 x 20 ms
    assert count == 12  # the role chunk, 10 tokens, [DONE]


# -------------------------------------------------------------------------- validation
async def test_validation_errors_like_vllm(client: httpx.AsyncClient) -> None:
    async def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == status
        return error

    unknown = await error_of(await client.post(CHAT, json={**chat(), "model": "gpt-9"}), 404)
    assert unknown["type"] == "NotFoundError"
    assert "gpt-9" in unknown["message"]

    cases: list[Any] = [
        {"model": MODEL},
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
        chat(max_tokens=5000),
        chat("word " * 5000),
        chat(max_tokens=0),
        chat(n=0),
        chat(stream_options={"include_usage": True}),
        chat("hi [[sim:explode=1]]"),
    ]
    for body in cases:
        error = await error_of(await client.post(CHAT, json=body), 400)
        assert error["type"] == "BadRequestError"
    overflow = (await client.post(CHAT, json=chat(max_tokens=5000))).json()["error"]
    assert "maximum context length is 4096" in overflow["message"]

    bad_json = await client.post(
        CHAT, content=b'{"model": ', headers={"content-type": "application/json"}
    )
    await error_of(bad_json, 400)

    current = await stats(client)
    assert current["requests_total"] == len(cases) + 3
    assert current["failed_total"] == len(cases) + 3
    assert current["completed_total"] == 0
    assert current["last_request"] == '{"model": '


# ------------------------------------------------------------------------ /sim control
async def test_reset_config_and_fail_rate(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json=chat())
    reset = await client.post("/sim/reset")
    assert reset.status_code == 200
    current = await stats(client)
    assert current["requests_total"] == current["completed_total"] == 0
    assert current["last_request"] is None
    assert (await client.get("/sim/requests")).json() == []

    config = await client.post("/sim/config", json={"fail_rate": 1})
    assert config.status_code == 200
    assert config.json()["fail_rate"] == 1.0
    assert (await client.get("/sim/config")).json()["fail_rate"] == 1.0
    for stream in (False, True):
        failed = await client.post(CHAT, json=chat(stream=stream))
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "InternalServerError"
    assert (await stats(client))["failed_total"] == 2

    config = await client.post("/sim/config", json={"fail_rate": 0, "tokens": 4})
    assert config.json()["tokens"] == 4
    body = (await client.post(CHAT, json=chat())).json()
    assert body["usage"]["completion_tokens"] == 4

    await client.post("/sim/config", json={"fault": "fail=502"})
    assert (await client.post(CHAT, json=chat())).status_code == 502

    for bad in ({"fail_rate": 2}, {"tokens": 0}, {"nope": 1}, {"fault": "boom"}, [1]):
        assert (await client.post("/sim/config", json=bad)).status_code == 400
    assert (await client.get("/sim/config")).json()["fault"] == "fail=502"


async def test_fail_rate_is_deterministic_with_a_seed(client: httpx.AsyncClient) -> None:
    async def outcomes() -> list[int]:
        await client.post("/sim/config", json={"fail_rate": 0.5, "seed": 7})
        return [(await client.post(CHAT, json=chat())).status_code for _ in range(30)]

    first = await outcomes()
    assert set(first) == {200, 500}
    assert await outcomes() == first


async def test_request_history_keeps_bodies_and_request_ids(client: httpx.AsyncClient) -> None:
    body = chat("remember me", stream=True, max_tokens=2)
    response = await client.post(CHAT, json=body, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    assert (await stats(client))["last_request"] == body
    [entry] = (await client.get("/sim/requests")).json()
    assert entry["request_id"] == "req-123"
    assert entry["body"] == body

    for index in range(105):
        await client.post(CHAT, json=chat(f"message {index}", max_tokens=1))
    history = (await client.get("/sim/requests")).json()
    assert len(history) == 100
    assert history[-1]["body"]["messages"][0]["content"] == "message 104"
    assert history[-1]["request_id"] is None
    assert (await stats(client))["requests_total"] == 106


# ---------------------------------------------------------------------- HTTP/1.1 wire
async def raw_exchange(sim: SimProcess, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection (5 s at most)."""
    host, port = sim.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def test_keep_alive_pipelining_chunked_body_and_garbage(sim: SimProcess) -> None:
    pipelined = (
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await raw_exchange(sim, pipelined)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert answer.index(b"-simulator") < answer.rindex(b"HTTP/1.1 200 OK")

    body = orjson.dumps(chat(max_tokens=2))
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n"
        % (len(body), body)
    )
    answer = await raw_exchange(sim, chunked)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: %d" % len(payload) in head
    assert orjson.loads(payload)["usage"]["completion_tokens"] == 2

    garbage = await raw_exchange(sim, b"THIS IS NOT HTTP\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400")


# ------------------------------------------------------------------ command-line options
async def test_command_line_options_and_sigterm(tmp_path: Path) -> None:
    sim = start_simulator(
        tmp_path / "custom.log",
        *("--model", "other-model", "--max-model-len", "64", "--tokens", "5"),
        *("--fail-rate", "0.5", "--seed", "3"),
    )
    try:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            card = (await client.get("/v1/models")).json()["data"][0]
            assert (card["id"], card["max_model_len"]) == ("other-model", 64)

            request = {"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}
            first = [(await client.post(CHAT, json=request)).status_code for _ in range(20)]
            assert set(first) == {200, 500}
            await client.post("/sim/reset", json={"config": True})  # re-seeds as at start-up
            assert [(await client.post(CHAT, json=request)).status_code for _ in range(20)] == first

            await client.post("/sim/config", json={"fail_rate": 0})
            body = (await client.post(CHAT, json=request)).json()
            assert body["usage"]["completion_tokens"] == 5
            assert body["model"] == "other-model"
            overflow = await client.post(CHAT, json={**request, "max_tokens": 60})
            assert overflow.status_code == 400

            hanging = asyncio.create_task(
                client.post(CHAT, json={**request, "stream": True}, headers={"X-Sim-Fault": "hang"})
            )
            await wait_for_stats(client, lambda s: s["active_streams"] == 1)
            assert sim.stop() == 0
            with pytest.raises(httpx.TransportError):
                await hanging
    finally:
        sim.stop()
    output = sim.output()
    assert re.search(r"simulator listening on http://127\.0\.0\.1:\d+", output), output
    assert "Traceback" not in output


async def test_embeddings_refuse_dimensions_above_the_model_size(client: httpx.AsyncClient) -> None:
    """As vLLM: `dimensions` may shorten the vector, never grow it; a huge value is a quick 400
    (it once stalled the single-threaded simulator building a vector of 2**31 floats)."""
    r = await client.post("/v1/embeddings", json={"input": "a", "dimensions": 4})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4
    started = time.monotonic()
    r = await client.post("/v1/embeddings", json={"input": "a", "dimensions": 2**31})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"
    assert time.monotonic() - started < 2


# --------------------------------------------------------------- vLLM's /metrics under load
def vllm_samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of the vllm:* series (labels as rendered)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("vllm:"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_vllm_metrics_move_with_the_load(tmp_path: Path) -> None:
    """Real vLLM names and labels; running/waiting split at --max-num-seqs, the KV cache fills
    with the requests in flight and empties after, a repeated conversation prefix hits the
    prefix cache, TTFT and end-to-end latency are observed into vLLM's buckets."""
    proc = start_simulator(
        tmp_path / "sim.log",
        "--max-num-seqs", "2", "--kv-cache-tokens", "1000", "--ttft-ms", "1500",
        "--itl-ms", "20", "--tokens", "10",
    )  # fmt: skip
    labels = f'{{engine="0",model_name="{MODEL}"}}'
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
            idle = vllm_samples((await client.get("/metrics")).text)
            assert idle[f"vllm:num_requests_running{labels}"] == 0
            assert idle[f"vllm:kv_cache_usage_perc{labels}"] == 0
            history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"}]
            tasks = [
                asyncio.create_task(
                    client.post(
                        CHAT, json={"model": MODEL, "messages": history, "stream": n % 2 == 1}
                    )
                )
                for n in range(5)
            ]

            async def busy() -> dict[str, float] | None:
                s = vllm_samples((await client.get("/metrics")).text)
                running = s[f"vllm:num_requests_running{labels}"]
                return s if running == 2 and s[f"vllm:num_requests_waiting{labels}"] == 3 else None

            loaded = await wait_until(busy, timeout=10, interval=0.01)
            assert 0 < loaded[f"vllm:kv_cache_usage_perc{labels}"] <= 1
            for response in await asyncio.gather(*tasks):
                assert response.status_code == 200
            after = vllm_samples((await client.get("/metrics")).text)
            assert after[f"vllm:num_requests_running{labels}"] == 0
            assert after[f"vllm:num_requests_waiting{labels}"] == 0
            assert after[f"vllm:kv_cache_usage_perc{labels}"] == 0
            # the same two leading messages five times: the first queries, the next four hit
            queries = after[f"vllm:prefix_cache_queries_total{labels}"]
            hits = after[f"vllm:prefix_cache_hits_total{labels}"]
            assert queries > 0 and 0 < hits < queries
            assert after[f"vllm:time_to_first_token_seconds_count{labels}"] == 5
            bucket = 'vllm:time_to_first_token_seconds_bucket{engine="0",model_name="%s",le="%s"}'
            assert after[bucket % (MODEL, "1.0")] == 0  # every first token took >= 1.5 s
            assert after[bucket % (MODEL, "+Inf")] == 5
            assert after[f"vllm:e2e_request_latency_seconds_count{labels}"] == 5
            assert after[f"vllm:e2e_request_latency_seconds_sum{labels}"] >= 5 * 1.5
            # a different conversation misses
            other = [{"role": "user", "content": "something else entirely"}]
            assert (
                await client.post(CHAT, json={"model": MODEL, "messages": other})
            ).status_code == 200
            last = vllm_samples((await client.get("/metrics")).text)
            assert last[f"vllm:prefix_cache_hits_total{labels}"] == hits
            assert last[f"vllm:prefix_cache_queries_total{labels}"] > queries
            # /sim/reset zeroes them like a restarted server
            await client.post("/sim/reset", json={})
            reset = vllm_samples((await client.get("/metrics")).text)
            assert reset[f"vllm:prefix_cache_queries_total{labels}"] == 0
            assert reset[f"vllm:time_to_first_token_seconds_count{labels}"] == 0
    finally:
        proc.stop()
