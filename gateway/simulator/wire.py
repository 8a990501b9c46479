"""vLLM's bytes on the wire: error bodies, stream chunks, whole completions, model list."""

from __future__ import annotations

import os
import time
from http import HTTPStatus
from typing import Any

import orjson

from simulator.answers import Answer

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
}
ROLE_TAIL = b'"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
CONTENT = b'"content":'
MID_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
FINAL_TAILS = {
    "stop": b'},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}\n\n',
    "length": b'},"logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n',
}
_USAGE = b'[],"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n'
DONE = b"data: [DONE]\n\n"


def error_type(status: int) -> str:
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    return phrase.replace(" ", "").replace("-", "") + "Error"


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """vLLM's ``ErrorResponse``: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(
        {"error": {"message": message, "type": error_type(status), "param": param, "code": status}}
    )


class Frames:
    """The byte pieces of one streamed completion (its id and ``created`` are fixed)."""

    __slots__ = ("content", "head", "prefix")

    def __init__(self, model_json: bytes) -> None:
        cid = os.urandom(16).hex().encode()
        head = b'data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,' % (
            cid,
            int(time.time()),
        )
        self.head = head + b'"model":%s,"choices":' % model_json
        self.prefix = self.head + b'[{"index":0,"delta":{'
        self.content = self.prefix + CONTENT

    def role(self) -> bytes:
        return self.prefix + ROLE_TAIL

    def token(self, encoded: bytes, finish_reason: str | None = None) -> bytes:
        tail = MID_TAIL if finish_reason is None else FINAL_TAILS[finish_reason]
        return self.content + encoded + tail

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        total = prompt_tokens + completion_tokens
        return self.head + _USAGE % (prompt_tokens, total, completion_tokens)


def sse_body(
    model_json: bytes, answer: Answer, finish_reason: str, prompt_tokens: int, include_usage: bool
) -> bytes:
    """A whole event stream: role chunk, a chunk per token, usage if asked, ``[DONE]``."""
    frames = Frames(model_json)
    content = frames.content
    encoded = answer.encoded
    parts = [frames.prefix, ROLE_TAIL]
    for token in encoded[:-1]:
        parts += (content, token, MID_TAIL)
    parts += (content, encoded[-1] if encoded else b'""', FINAL_TAILS[finish_reason])
    if include_usage:
        parts.append(frames.usage(prompt_tokens, len(encoded)))
    parts.append(DONE)
    return b"".join(parts)


def completion_body(model: str, answer: Answer, finish_reason: str, prompt_tokens: int) -> bytes:
    completion = len(answer.tokens)
    return orjson.dumps(
        {
            "id": "chatcmpl-" + os.urandom(16).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": answer.text,
                        "reasoning_content": None,
                        "tool_calls": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion,
                "completion_tokens": completion,
                "prompt_tokens_details": None,
            },
            "prompt_logprobs": None,
        }
    )


def model_list(model: str, max_model_len: int, created: int) -> bytes:
    card: dict[str, Any] = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": "modelperm-" + os.urandom(16).hex(),
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }
    return orjson.dumps({"object": "list", "data": [card]})
