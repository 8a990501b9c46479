"""What the access log says about a chat, and what it never says."""

from __future__ import annotations

import json

import pytest

from tests.conftest import login


def _records(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("log_content", [False, True])
async def test_one_line_per_chat_with_the_spec_fields(  # type: ignore[no-untyped-def]
    start_gateway, simulator, capsys: pytest.CaptureFixture[str], log_content: bool
) -> None:
    secret_prompt = "my card number is 4111 and my mail is jane.doe@example.org"
    async with start_gateway(log_content=log_content) as gw:
        async with gw.client() as c:
            token = await login(c, "test@example.com", "test")
        async with gw.client(token) as c:
            r = await c.post(
                "/api/chat",
                json={"stream": False, "messages": [{"role": "user", "content": secret_prompt}]},
                headers={"X-Request-ID": "trace-chat-1"},
            )
            assert r.status_code == 200 and r.headers["x-request-id"] == "trace-chat-1"
            answer = r.json()["choices"][0]["message"]["content"]
    out = capsys.readouterr().out
    chat_lines = [x for x in _records(out) if x.get("path") == "/api/chat"]
    assert len(chat_lines) == 1
    line = chat_lines[0]
    assert line["request_id"] == "trace-chat-1" and line["status_code"] == 200
    assert line["model"] == "simulator-model" and line["user_id"] > 0
    for field in ("ctx_len", "input_tokens", "output_tokens", "ttft_ms", "latency_ms"):
        assert isinstance(line[field], int | float), field
    assert line["output_tokens"] == 16
    # the request id went upstream too
    history = (await _history(simulator))["requests"]
    assert any(h.get("request_id") == "trace-chat-1" for h in history)
    # secrets never appear: the token, the login email, the password
    assert token not in out and "test@example.com" not in out
    assert "jane.doe@example.org" not in out  # masked even when contents are logged
    if log_content:
        assert "4111" in line["prompt"] and line["completion"] == answer
    else:
        assert "4111" not in out and answer not in out
        assert "prompt" not in line and "completion" not in line


async def _history(simulator) -> dict:  # type: ignore[no-untyped-def, type-arg]
    from tests.conftest import sim_get

    result = await sim_get(simulator, "/sim/requests")
    return result if isinstance(result, dict) else {"requests": result}
