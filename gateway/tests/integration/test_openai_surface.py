"""The whole /v1 surface with the official `openai` SDK through the gateway against the
simulator (issue 14): tool loops, developer role, content parts, reasoning, `n`, completions,
embeddings, `models.retrieve`, OpenAI-shaped errors, and the routes in `/openapi.json`."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import yaml
from sqlalchemy import select

from app.db.models import RequestLog
from tests.conftest import login, sim_get, sim_post

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _sdk(gateway: Any, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


async def _token(gateway: Any) -> str:
    async with gateway.client() as c:
        return await login(c, "test", "test")


async def _usage_rows(gateway: Any) -> list[RequestLog]:
    await gateway.app.state.usage_recorder.flush()
    async with gateway.app.state.session_factory() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def _last_upstream(simulator: Any) -> dict[str, Any]:
    request: dict[str, Any] = (await sim_get(simulator, "/sim/stats"))["last_request"]
    return request


@pytest.mark.parametrize("stream", [False, True])
async def test_two_round_tool_loop(start_gateway, simulator, stream: bool) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
        # round 1: the model calls the tool
        if stream:
            events = await client.chat.completions.create(
                model="simulator-model", messages=messages, tools=[WEATHER_TOOL], stream=True
            )
            chunks = [c async for c in events]
            calls: dict[int, dict[str, Any]] = {}
            finish = None
            for chunk in chunks:
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        call = calls.setdefault(delta.index, {"id": None, "name": "", "args": ""})
                        call["id"] = delta.id or call["id"]
                        if delta.function is not None:
                            call["name"] += delta.function.name or ""
                            call["args"] += delta.function.arguments or ""
            assert finish == "tool_calls"
            assert len(chunks) > 4  # the arguments came in fragments, relayed as they came
            call = calls[0]
            tool_calls = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["args"]},
                }
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
        else:
            first = await client.chat.completions.create(
                model="simulator-model", messages=messages, tools=[WEATHER_TOOL]
            )
            assert first.choices[0].finish_reason == "tool_calls"
            message = first.choices[0].message
            assert message.content is None and message.tool_calls
            call = {
                "id": message.tool_calls[0].id,
                "name": message.tool_calls[0].function.name,  # type: ignore[union-attr]
                "args": message.tool_calls[0].function.arguments,  # type: ignore[union-attr]
            }
            messages.append(message.model_dump(exclude_none=True))
        assert call["name"] == "get_weather" and json.loads(call["args"]) == {"city": "Paris"}
        assert call["id"]
        # round 2: the tool's answer goes back; an assistant message with content null is fine
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": "22 C, sunny"})
        second = await client.chat.completions.create(
            model="simulator-model", messages=messages, tools=[WEATHER_TOOL]
        )
        assert second.choices[0].message.content == "The tool answered: 22 C, sunny"
        upstream = await _last_upstream(simulator)
        assert upstream["messages"][1]["tool_calls"][0]["id"] == call["id"]
        assert upstream["messages"][2] == messages[2]
        assert upstream["tools"] == [WEATHER_TOOL]
        rows = await _usage_rows(gw)
        assert [r.status_code for r in rows] == [200, 200]
        assert all(r.completion_tokens for r in rows)


async def test_developer_role_image_parts_and_prefill_reach_upstream_unchanged(
    start_gateway, simulator
) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        messages: list[Any] = [
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                    },
                ],
                "name": "alice",
            },
            {"role": "assistant", "content": ""},  # a prefill
        ]
        result = await client.chat.completions.create(
            model="simulator-model",
            messages=messages,
            response_format={"type": "json_object"},
            seed=7,
            extra_body={"top_k": 20, "repetition_penalty": 1.1},
        )
        assert result.choices[0].message.content
        upstream = await _last_upstream(simulator)
        assert upstream["messages"] == messages
        assert upstream["response_format"] == {"type": "json_object"}
        assert (upstream["seed"], upstream["top_k"], upstream["repetition_penalty"]) == (7, 20, 1.1)


async def test_reasoning_streamed_under_either_field_name(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    for field in ("reasoning", "reasoning_content"):
        async with start_gateway() as gw:
            await sim_post(simulator, "/sim/config", {"reasoning": field, "itl_ms": 5})
            client = _sdk(gw, await _token(gw))
            stream = await client.chat.completions.create(
                model="simulator-model",
                messages=[{"role": "user", "content": "Think, then answer"}],
                stream=True,
            )
            thinking, answer = "", ""
            async for chunk in stream:
                if chunk.choices:
                    delta = chunk.choices[0].delta
                    thinking += getattr(delta, field, None) or ""
                    answer += delta.content or ""
            assert thinking.startswith("The user wants an answer") and answer
            whole = await client.chat.completions.create(
                model="simulator-model", messages=[{"role": "user", "content": "Again"}]
            )
            assert getattr(whole.choices[0].message, field).startswith("The user wants")
            rows = await _usage_rows(gw)
            first = rows[0]
            # two times: the first token of any kind (thinking), then the first answer token
            assert first.ttft_ms is not None and first.answer_ttft_ms is not None
            assert first.answer_ttft_ms > first.ttft_ms


async def test_n_and_logprobs_are_relayed(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        result = await client.chat.completions.create(
            model="simulator-model",
            messages=[{"role": "user", "content": "Two answers"}],
            n=2,
            logprobs=True,
            top_logprobs=2,
            max_tokens=4,
        )
        assert [c.index for c in result.choices] == [0, 1]
        assert result.choices[1].logprobs is not None
        content = result.choices[1].logprobs.content
        assert content is not None and len(content[0].top_logprobs) == 2
        stream = await client.chat.completions.create(
            model="simulator-model",
            messages=[{"role": "user", "content": "Two answers"}],
            n=3,
            max_tokens=4,
            stream=True,
        )
        seen = {c.choices[0].index async for c in stream if c.choices}
        assert seen == {0, 1, 2}


async def test_completions(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        result = await client.completions.create(
            model="simulator-model", prompt="Once upon a time", max_tokens=5
        )
        assert result.object == "text_completion" and result.choices[0].text
        assert result.usage is not None and result.usage.completion_tokens == 5
        stream = await client.completions.create(
            model="simulator-model",
            prompt=["Once", "Twice"],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
        rows = await _usage_rows(gw)
        assert [(r.status_code, r.client, r.completion_tokens) for r in rows] == [
            (200, "api", 5),
            (200, "api", 6),
        ]
        assert rows[1].ttft_ms is not None and rows[1].answer_ttft_ms is not None
        with pytest.raises(openai.BadRequestError) as bad:
            await client.completions.create(model="simulator-model", prompt=[])
        assert bad.value.body["param"] == "prompt"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):  # 20 prompts x 10 answers: past the bound
            await client.completions.create(model="simulator-model", prompt=["a"] * 20, n=10)


async def test_embeddings(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        result = await client.embeddings.create(model="simulator-model", input=["a", "b"])
        assert len(result.data) == 2 and len(result.data[0].embedding) == 16
        assert result.data[0].embedding != result.data[1].embedding
        floats = await client.embeddings.create(
            model="current", input="a", encoding_format="float", dimensions=4
        )
        assert len(floats.data[0].embedding) == 4
        rows = await _usage_rows(gw)
        assert [r.status_code for r in rows] == [200, 200]
        assert rows[0].prompt_tokens and rows[0].completion_tokens == 0
        # a chat model serves no embeddings: a clear 400 at once, never a hang or a 503
        await sim_post(simulator, "/sim/config", {"embeddings": False})
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="simulator-model", input="a")
        assert refused.value.body["code"] == "endpoint_not_supported"  # type: ignore[index]


async def test_models_retrieve_by_id_profile_and_alias(start_gateway, simulator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "sim-profile": {
                        "name": "Simulator",
                        "model_id": "simulator-model",
                        "runtime": "external",
                        "base_url": f"{simulator.url}/v1",
                        "aliases": ["Sim-Alias"],
                        "cpu_only": True,
                    }
                }
            }
        )
    )
    async with start_gateway(
        model_profiles_path=profiles,
        model_default_profile="sim-profile",
        model_aliases=["gpt-4o-mini"],
    ) as gw:
        client = _sdk(gw, await _token(gw))
        await _wait_running(gw)
        for name in ("simulator-model", "sim-profile", "sim-alias", "gpt-4o-mini", "current"):
            model = await client.models.retrieve(name)
            assert model.id == "simulator-model", name
            result = await client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert result.model == "simulator-model"
            assert (await _last_upstream(simulator))["model"] == "simulator-model"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-5")
        async with gw.client(await _token(gw)) as c:
            r = await c.post(
                "/api/chat",
                json={"model": "sim-alias", "messages": [{"role": "user", "content": "x"}]},
            )
            assert r.status_code == 200


async def _wait_running(gw: Any) -> None:
    from tests.conftest import wait_until

    await wait_until(lambda: gw.app.state.model_manager.status.value == "running", timeout=20)


async def test_invalid_requests_raise_bad_request_in_openai_shape(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        client = _sdk(gw, await _token(gw))
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="simulator-model",
                messages=[{"role": "user", "content": "hi"}],
                temperature=5,
            )
        err = bad.value.body
        assert isinstance(err, dict)
        assert err["param"] == "temperature" and err["type"] == "BadRequestError"
        assert err["code"] == "validation_error" and err["request_id"]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="simulator-model", messages=[{"role": "wizard", "content": "hi"}]
            )
        # the model server's own 400 keeps its message and param
        with pytest.raises(openai.BadRequestError) as upstream:
            await client.chat.completions.create(
                model="simulator-model",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4095,  # within the context, but not with the prompt
            )
        assert upstream.value.body["code"] == "upstream_rejected"  # type: ignore[index]
        assert upstream.value.body["param"] == "max_tokens"  # type: ignore[index]


async def test_openapi_lists_the_chat_routes(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        async with gw.client() as c:
            doc = (await c.get("/openapi.json")).json()
            wrong = await c.get("/v1/chat/completions")
        for path in ("/api/chat", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            operation = doc["paths"][path]["post"]
            assert operation["security"] == [{"bearer": []}]
            assert "requestBody" in operation
        chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
        assert {"application/json", "text/event-stream"} <= set(chat)
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert doc["paths"]["/v1/models/{model_id}"]["get"]["security"] == [{"bearer": []}]
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        body = wrong.json()["error"]
        assert body["code"] == "method_not_allowed" and body["type"] == "MethodNotAllowedError"


@pytest.mark.parametrize("streaming", [False, True])
async def test_langchain_tool_loop(start_gateway, simulator, streaming: bool) -> None:  # type: ignore[no-untyped-def]
    """An agent framework from PyPI, unchanged: LangChain's `ChatOpenAI.bind_tools` loop."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"18 C in {city}"

    async with start_gateway() as gw:
        llm = ChatOpenAI(
            base_url=f"{gw.url}/v1",
            api_key=await _token(gw),  # type: ignore[arg-type]
            model="simulator-model",
            max_retries=0,
            timeout=20,
            streaming=streaming,
        ).bind_tools([get_weather])
        messages: list[Any] = [HumanMessage("What's the weather in Paris?")]
        first = await llm.ainvoke(messages)
        assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
        messages.append(first)
        for call in first.tool_calls:
            result = get_weather.invoke(call["args"])
            messages.append(ToolMessage(result, tool_call_id=call["id"]))
        final = await llm.ainvoke(messages)
        assert final.content == "The tool answered: 18 C in Paris"
        assert not final.tool_calls


async def test_reasoning_stored_apart_on_api_chat(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import read_sse, wait_until

    async with start_gateway() as gw:
        await sim_post(simulator, "/sim/config", {"reasoning": "reasoning", "itl_ms": 5})
        token = await _token(gw)
        async with gw.client(token) as c:
            async with c.stream(
                "POST", "/api/chat", json={"messages": [{"role": "user", "content": "Why?"}]}
            ) as r:
                assert r.status_code == 200
                conversation = r.headers["x-conversation-id"]
                events = await read_sse(r)
            deltas = [
                e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")
            ]
            thinking = "".join(d.get("reasoning") or "" for d in deltas)
            answer = "".join(d.get("content") or "" for d in deltas)
            assert thinking.startswith("The user wants an answer") and answer

            async def stored() -> Any:
                got = (await c.get(f"/api/conversations/{conversation}")).json()
                return got if len(got["messages"]) == 2 else None

            detail = await wait_until(stored)
        reply = detail["messages"][1]
        assert reply["content"] == answer  # the answer alone
        assert reply["reasoning"] == thinking and reply["reasoning_ms"] is not None
        # the stored question is not polluted either, and usage has both times
        assert detail["messages"][0]["reasoning"] is None
        row = (await _usage_rows(gw))[0]
        assert row.ttft_ms is not None and row.answer_ttft_ms is not None
        assert row.answer_ttft_ms >= row.ttft_ms
