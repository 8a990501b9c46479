"""The official `openai` SDK against the gateway's /v1, unchanged (SPEC §3 OpenAI surface)."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select

from app.db.models import RequestLog
from tests.conftest import login, sim_get


def _sdk(gateway, key: str) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


async def _token(gateway) -> str:  # type: ignore[no-untyped-def]
    async with gateway.client() as c:
        return await login(c, "test", "test")


async def _usage_rows(gateway) -> list[RequestLog]:  # type: ignore[no-untyped-def]
    await gateway.app.state.usage_recorder.flush()
    async with gateway.app.state.session_factory() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def test_non_streaming_completion(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        result = await client.chat.completions.create(
            model="simulator-model",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=8,
        )
        assert result.choices[0].message.content
        assert result.choices[0].finish_reason == "length"
        assert result.usage is not None and result.usage.completion_tokens == 8
        rows = await _usage_rows(gw)
        assert len(rows) == 1
        row = rows[0]
        assert (row.status_code, row.client, row.model) == (200, "api", "simulator-model")
        assert row.prompt_tokens == result.usage.prompt_tokens and row.completion_tokens == 8
        assert row.latency_ms is not None and row.ttft_ms is not None


async def test_streaming_with_and_without_usage(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        stream = await client.chat.completions.create(
            model="current",
            messages=[{"role": "user", "content": "Tell me something"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text) > 10
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 16

        plain = await client.chat.completions.create(
            model="simulator-model", messages=[{"role": "user", "content": "Again"}], stream=True
        )
        plain_chunks = [chunk async for chunk in plain]
        assert plain_chunks and all(c.choices for c in plain_chunks)  # no usage-only chunk
        # the gateway still asked upstream for usage and recorded it
        rows = await _usage_rows(gw)
        assert [r.completion_tokens for r in rows] == [16, 16]
        last = await sim_get(simulator, "/sim/stats")
        assert last["last_request"]["stream_options"] == {"include_usage": True}


async def test_models_list(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        models = await _sdk(gw, await _token(gw)).models.list()
        assert [m.id for m in models.data] == ["simulator-model"]


async def test_error_types(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await _sdk(gw, "not-a-token").chat.completions.create(
                model="current", messages=[{"role": "user", "content": "x"}]
            )
        assert unauthorized.value.status_code == 401
        client = _sdk(gw, await _token(gw))
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="current", messages=[{"role": "user", "content": "x [[sim:fail=429]]"}]
            )
        assert limited.value.response.headers.get("retry-after")
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
    async with start_gateway(vllm_base_url="http://127.0.0.1:9/v1") as gw:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await _sdk(gw, await _token(gw)).chat.completions.create(
                model="current", messages=[{"role": "user", "content": "x"}]
            )
        assert unavailable.value.status_code == 503
        assert unavailable.value.response.headers["retry-after"] == "5"


async def test_api_key_works_with_the_sdk(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        async with gw.client(await _token(gw)) as c:
            key = (await c.post("/api/auth/keys", json={"name": "sdk"})).json()["key"]
        result = await _sdk(gw, key).chat.completions.create(
            model="current", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert result.usage is not None and result.usage.completion_tokens == 3
