"""The model-server client's pure parts: SSE framing, status mapping, error bodies; and the
relay's coalescing of content deltas (issue 14 item 6)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from app.services.chat_request import ChatRequest
from app.services.chat_stream import DONE_EVENT, ChatRelay, _carries_token
from app.services.upstream import (
    Endpoint,
    error_fields,
    map_status,
    split_events,
    status_error,
)


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _split_events_reference(data: bytes) -> tuple[list[bytes], bytes]:
    """The plain algorithm `split_events` shortcuts for vLLM's framing (issue 14's perf2)."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    if end < 0:
        return [], data
    blocks = data[:end].split(b"\n\n")
    if all(block.startswith(b"data: ") and b"\n" not in block for block in blocks):
        return [block[6:] for block in blocks], data[end + 2 :]
    payloads = []
    for block in blocks:
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                payloads.append(line[5:].lstrip(b" "))
    return payloads, data[end + 2 :]


def test_split_events_shortcut_equals_the_plain_algorithm_on_random_framing() -> None:
    pieces = [
        b"data: ",
        b"data:",
        b"\n",
        b"\n\n",
        b"\r\n",
        b": ping",
        b"event: x",
        b"{}",
        b"a",
        b" ",
    ]
    rng = random.Random(14)
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert split_events(data) == _split_events_reference(data), data


def test_carries_token_is_any_non_empty_text_field() -> None:
    keys = (b'"content":"', b'"text":"', b'"reasoning":"', b'"reasoning_content":"')

    def reference(payload: bytes) -> bool:
        return any(key in payload and key + b'"' not in payload for key in keys)

    parts = [*keys, b'"', b"x", b",", b"{", b"}", b"null"]
    rng = random.Random(17)
    for _ in range(20_000):
        payload = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        assert _carries_token(payload) == reference(payload), payload
    assert _carries_token(b'{"choices":[{"delta":{"content":"hi"}}]}')
    assert not _carries_token(b'{"choices":[{"delta":{"content":""}}]}')
    assert _carries_token(b'{"choices":[{"delta":{"reasoning_content":"hm"}}]}')


class TestSplitEvents:
    def test_vllm_framing_across_reads(self) -> None:
        wire = _event({"a": 1}) + _event({"b": 2}) + b"data: [DONE]\n\n"
        events: list[bytes] = []
        rest = b""
        for i in range(0, len(wire), 7):  # any cut, even inside "data: " or "\n\n"
            got, rest = split_events(rest + wire[i : i + 7])
            events += got
        assert events == [b'{"a":1}', b'{"b":2}', b"[DONE]"] and rest == b""

    def test_unfinished_event_stays_buffered(self) -> None:
        events, rest = split_events(b'data: {"a":1}\n\ndata: {"b"')
        assert events == [b'{"a":1}'] and rest == b'data: {"b"'

    def test_crlf_comments_and_other_fields(self) -> None:
        wire = b': ping\r\n\r\nevent: message\r\ndata: {"a":1}\r\n\r\ndata:{"b":2}\n\n'
        events, rest = split_events(wire)
        assert events == [b'{"a":1}', b'{"b":2}'] and rest == b""


class TestStatusMapping:
    @pytest.mark.parametrize(
        ("status", "endpoint", "expected", "code"),
        [
            (400, Endpoint.CHAT, 400, "upstream_rejected"),
            (422, Endpoint.COMPLETIONS, 400, "upstream_rejected"),
            (404, Endpoint.CHAT, 503, "model_unavailable"),  # the model is gone (a switch)
            (404, Endpoint.EMBEDDINGS, 400, "endpoint_not_supported"),
            (405, Endpoint.COMPLETIONS, 400, "endpoint_not_supported"),
            (429, Endpoint.CHAT, 429, "rate_limited"),
            (503, Endpoint.CHAT, 503, "model_unavailable"),
            (504, Endpoint.CHAT, 504, "upstream_timeout"),
            (500, Endpoint.CHAT, 502, "upstream_error"),
        ],
    )
    def test_statuses(self, status: int, endpoint: Endpoint, expected: int, code: str) -> None:
        err = map_status(status, "detail", None, endpoint)
        assert (err.status_code, err.code) == (expected, code)
        if expected in (429, 503):
            assert err.headers["Retry-After"]

    def test_vllm_error_keeps_message_and_param(self) -> None:
        raw = orjson.dumps(
            {"error": {"message": "max_tokens too large", "type": "BadRequestError",
                       "param": "max_tokens", "code": 400}}
        )  # fmt: skip
        err = status_error(400, raw, Endpoint.CHAT)
        assert "max_tokens too large" in err.message and err.param == "max_tokens"

    def test_other_bodies(self) -> None:
        assert error_fields(b'{"detail":"Not Found"}') == ("Not Found", None)
        assert error_fields(b"<html>bad gateway</html>") == ("<html>bad gateway</html>", None)


def _relay(ui: bool, flush_ms: int = 1000) -> ChatRelay:
    request = ChatRequest(body={}, stream=True, client_wants_usage=False, messages=[])
    return ChatRelay(
        None,  # type: ignore[arg-type]  # _process never talks to the server
        request,
        ui=ui,
        flush_ms=flush_ms,
        first_token_timeout_s=1,
        idle_timeout_s=1,
        request_id=None,
        on_finish=lambda _: None,
        conversation_id="c-1" if ui else None,
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps(
        {"id": "x", "object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    )  # fmt: skip


def _payloads(out: bytes) -> list[Any]:
    events, _ = split_events(out)
    return [e if e == b"[DONE]" else orjson.loads(e) for e in events]


class TestCoalescing:
    def test_ui_merges_content_but_never_the_first_token(self) -> None:
        relay = _relay(ui=True)
        pending: list[str] = []
        events = [
            _chunk({"content": "Hel"}),
            _chunk({"content": "lo"}),
            _chunk({"content": " you"}),
        ]
        out, done, template = relay._process(events, pending, None)
        first = _payloads(out)
        assert len(first) == 1 and first[0]["choices"][0]["delta"] == {"content": "Hel"}
        assert first[0]["conversation_id"] == "c-1"
        assert pending == ["lo", " you"] and not done
        # the finish chunk flushes what is held back, in order, before itself; [DONE] ends
        out, done, _ = relay._process([_chunk({}, "stop"), b"[DONE]"], pending, template)
        rest = _payloads(out)
        assert rest[0]["choices"][0]["delta"] == {"content": "lo you"}
        assert rest[1]["choices"][0]["finish_reason"] == "stop"
        assert rest[2] == b"[DONE]" and done and pending == []
        assert relay.outcome.text == ["Hel", "lo", " you"]

    def test_reasoning_is_kept_apart_and_timed_first(self) -> None:
        relay = _relay(ui=True)
        pending: list[str] = []
        events = [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"reasoning": "think"}),
            _chunk({"reasoning_content": "ing"}),
            _chunk({"content": "Answer"}),
        ]
        out, _, _ = relay._process(events, pending, None)
        deltas = [p["choices"][0]["delta"] for p in _payloads(out)]
        assert {"reasoning": "think"} in deltas and {"content": "Answer"} in deltas
        assert relay.outcome.reasoning == ["think", "ing"]
        assert relay.outcome.text == ["Answer"]
        assert relay.outcome.ttft_ms is not None and relay.outcome.answer_ttft_ms is not None

    def test_v1_relays_bytes_untouched(self) -> None:
        relay = _relay(ui=False)
        pending: list[str] = []
        raw = [_chunk({"content": "a"}), b'{"odd" :  "spacing", "choices": []}', b"[DONE]"]
        out, done, _ = relay._process(raw, pending, None)
        assert out.endswith(DONE_EVENT) and done and not pending
        assert b'data: {"odd" :  "spacing", "choices": []}\n\n' in out
