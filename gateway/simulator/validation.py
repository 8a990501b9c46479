"""Checks on a chat completion request, with vLLM's statuses and messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.answers import count_prompt_tokens, message_text

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


class BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatRequest:
    stream: bool
    include_usage: bool
    max_tokens: int  # as asked, or what the context leaves
    prompt_tokens: int
    last_user: str  # text of the last user message
    first_system: str = ""  # text of the first system message (a title request, say)


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(400, f"{name} must be an integer", name)
    return value


def validate(body: Any, model_name: str, max_model_len: int) -> ChatRequest:
    """Raise :class:`BadRequest` (400, or 404 for an unknown model) like vLLM would."""
    if not isinstance(body, dict):
        raise BadRequest(400, "The request body must be a JSON object.")
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(400, "Field required: messages", "messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "messages must be a non-empty list.", "messages")
    last_user = ""
    first_system = ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(400, f"messages[{index}] must be an object.", "messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest(400, f"Invalid role {role!r} in messages[{index}].", "messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(
                400, f"messages[{index}].content must be a string or a list.", "messages"
            )
        if role == "user":
            last_user = message_text(content)
        elif role == "system" and not first_system:
            first_system = message_text(content)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(400, "model must be a string.", "model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(400, "stream must be a boolean.", "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest(400, "stream_options must be an object.", "stream_options")
        if not stream:
            raise BadRequest(
                400, "Stream options can only be defined when `stream=True`.", "stream_options"
            )
        include_usage = bool(options.get("include_usage", True))
    max_tokens = _int_field(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest(400, f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    n = _int_field(body, "n")
    if n is not None and n < 1:
        raise BadRequest(400, f"n must be at least 1, got {n}.", "n")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(400, f"{name} must be a number.", name)
    if model is not None and model != model_name:
        raise BadRequest(404, f"The model `{model}` does not exist.", "model")

    limit = max_model_len
    prompt_tokens = count_prompt_tokens(messages)
    if prompt_tokens >= limit:
        raise BadRequest(
            400,
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {prompt_tokens} input tokens. Please reduce the length of the input "
            "messages.",
            "messages",
        )
    if max_tokens is None:
        max_tokens = limit - prompt_tokens
    elif prompt_tokens + max_tokens > limit:
        raise BadRequest(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
            f"model's maximum context length is {limit} tokens and your request has "
            f"{prompt_tokens} input tokens ({max_tokens} > {limit} - {prompt_tokens}).",
            "max_tokens",
        )
    return ChatRequest(
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=prompt_tokens,
        last_user=last_user,
        first_system=first_system,
    )
