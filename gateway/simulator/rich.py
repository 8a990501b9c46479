"""Answers beyond plain text, shaped as vLLM's own protocol classes shape them
(`vllm/entrypoints/openai/engine/protocol.py`: `DeltaMessage{role, content, reasoning,
tool_calls}`, `DeltaToolCall{id, type, index, function{name, arguments}}`, chunks serialized
without unset fields): reasoning before the answer, tool calls streamed as an id/name delta
then argument fragments, `finish_reason: "tool_calls"`, logprobs, `n > 1`; and the
`/v1/completions` and `/v1/embeddings` bodies.

The plain-text chat path (`simulator.wire`) stays byte-templated for speed; a request goes
through here only when it asks for one of these features or the model "reasons".
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import os
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.answers import Answer, message_text, split_tokens

THINKING = "The user wants an answer. I will think briefly, then answer plainly."


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model writes it


def wants_rich(body: dict[str, Any], reasoning_field: str) -> bool:
    return bool(
        reasoning_field
        or body.get("tools")
        or body.get("logprobs")
        or (isinstance(body.get("n"), int) and body["n"] > 1)
    )


def _argument(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "string":
        enum = schema.get("enum")
        return enum[0] if isinstance(enum, list) and enum else "Paris"
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def tool_call_for(body: dict[str, Any]) -> ToolCall | None:
    """The first round of a tool loop calls a tool (the one `tool_choice` names, else the
    first); once the last message is a tool result, the model answers in text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    chosen: Any = tools[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        chosen = next(
            (
                t
                for t in tools
                if isinstance(t, dict) and t.get("function", {}).get("name") == wanted
            ),
            chosen,
        )
    function = chosen.get("function") if isinstance(chosen, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    params = function.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict):
        props = {}
    args = {name: _argument(schema) for name, schema in props.items()}
    return ToolCall(
        "chatcmpl-tool-" + os.urandom(16).hex(), function["name"], orjson.dumps(args).decode()
    )


def tool_answer(body: dict[str, Any]) -> Answer | None:
    """After a tool result: an answer that quotes it (so a test sees the round trip)."""
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        result = message_text(messages[-1].get("content"))
        return Answer.of(split_tokens(f"The tool answered: {result}"))
    return None


def _fragments(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _logprob(token: str, top: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    entry["top_logprobs"] = [
        {"token": token if k == 0 else f"{token}~{k}", "logprob": -0.25 - k, "bytes": None}
        for k in range(top)
    ]
    return entry


@dataclass(slots=True)
class RichAnswer:
    """One chat answer: thinking, then either text or a tool call; for each of `n` choices."""

    model: str
    answer: Answer
    finish_reason: str
    prompt_tokens: int
    reasoning_field: str
    tool: ToolCall | None
    n: int
    logprobs: bool
    top_logprobs: int

    @property
    def thinking(self) -> tuple[str, ...]:
        return split_tokens(THINKING) if self.reasoning_field else ()

    def completion_tokens(self) -> int:
        tool = len(_fragments(self.tool.arguments)) + 1 if self.tool else 0
        text = 0 if self.tool else len(self.answer.tokens)
        return (len(self.thinking) + tool + text) * self.n

    def _usage(self) -> dict[str, Any]:
        completion = self.completion_tokens()
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
        }

    def body(self) -> bytes:
        choices = []
        for index in range(self.n):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if self.tool else self.answer.text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "tool_calls": [],
                "reasoning": None,
            }
            if self.reasoning_field:
                message[self.reasoning_field] = THINKING
            if self.tool:
                message["tool_calls"] = [
                    {
                        "id": self.tool.id,
                        "type": "function",
                        "function": {"name": self.tool.name, "arguments": self.tool.arguments},
                    }
                ]
            logprobs = (
                {"content": [_logprob(t, self.top_logprobs) for t in self.answer.tokens]}
                if self.logprobs and not self.tool
                else None
            )
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": "tool_calls" if self.tool else self.finish_reason,
                    "stop_reason": None,
                }
            )
        return orjson.dumps(
            {
                "id": "chatcmpl-" + os.urandom(16).hex(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": choices,
                "service_tier": None,
                "system_fingerprint": None,
                "usage": self._usage(),
                "prompt_logprobs": None,
                "kv_transfer_params": None,
            }
        )

    def events(self, include_usage: bool) -> list[bytes]:
        """The stream's events, one per generated token (pacing is the caller's)."""
        head = {
            "id": "chatcmpl-" + os.urandom(16).hex(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }

        def event(index: int, delta: dict[str, Any], **extra: Any) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            choice.update(extra)
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        steps: list[list[bytes]] = [[] for _ in range(self.n)]
        for index, out in enumerate(steps):
            out.append(event(index, {"role": "assistant", "content": ""}))
            for token in self.thinking:
                out.append(event(index, {self.reasoning_field: token}))
            if self.tool:
                first = {
                    "id": self.tool.id,
                    "type": "function",
                    "index": 0,
                    "function": {"name": self.tool.name},
                }
                out.append(event(index, {"tool_calls": [first]}))
                for part in _fragments(self.tool.arguments):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                    out.append(event(index, delta))
                out.append(event(index, {}, finish_reason="tool_calls", stop_reason=None))
                continue
            tokens = self.answer.tokens
            for k, token in enumerate(tokens):
                extra: dict[str, Any] = {}
                if self.logprobs:
                    extra["logprobs"] = {"content": [_logprob(token, self.top_logprobs)]}
                if k == len(tokens) - 1:
                    extra.update(finish_reason=self.finish_reason, stop_reason=None)
                out.append(event(index, {"content": token}, **extra))
        # the choices advance together, as vLLM's engine steps them
        merged = [e for step in itertools.zip_longest(*steps) for e in step if e is not None]
        if include_usage:
            usage = {**head, "choices": [], "usage": self._usage()}
            merged.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        return merged


# --------------------------------------------------------------------------- /v1/completions
def completion_prompts(prompt: Any) -> list[str] | None:
    """vLLM's `prompt`: a string, a list of strings, token ids, or a list of token id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, list) and p for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    return None


def completion_body(
    model: str, answer: Answer, finish_reason: str, prompt_tokens: int, count: int
) -> bytes:
    choices = [
        {
            "index": i,
            "text": answer.text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        for i in range(count)
    ]
    completion = len(answer.tokens) * count
    return orjson.dumps(
        {
            "id": "cmpl-" + os.urandom(16).hex(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion,
                "completion_tokens": completion,
                "prompt_tokens_details": None,
            },
        }
    )


def completion_events(
    model: str,
    answer: Answer,
    finish_reason: str,
    prompt_tokens: int,
    count: int,
    include_usage: bool,
) -> list[bytes]:
    head = {
        "id": "cmpl-" + os.urandom(16).hex(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    out = []
    last = len(answer.tokens) - 1
    for k, token in enumerate(answer.tokens):
        for i in range(count):
            choice = {
                "index": i,
                "text": token,
                "logprobs": None,
                "finish_reason": finish_reason if k == last else None,
                "stop_reason": None,
            }
            out.append(b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n")
    if include_usage:
        completion = len(answer.tokens) * count
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens": completion,
        }
        out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    return out


# ---------------------------------------------------------------------------- /v1/embeddings
EMBEDDING_SIZE = 16  # the simulated model's vectors; `dimensions` may shorten them, never grow


def embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for a text (the same text, the same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 + i * 1e-3 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def embeddings_body(
    model: str, texts: list[str], dimensions: int, encoding: str, prompt_tokens: int
) -> bytes:
    data = []
    for i, text in enumerate(texts):
        vector = embedding(text, dimensions)
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"index": i, "object": "embedding", "embedding": value})
    return orjson.dumps(
        {
            "id": "embd-" + os.urandom(16).hex(),
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": data,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )
