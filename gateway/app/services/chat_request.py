"""Parsing and validating chat requests before anything is sent upstream.

Hand-written checks over the parsed JSON rather than a pydantic model: /v1 bodies carry any
OpenAI field (tools, response_format, seed, ...) that must pass through untouched, and this runs
on the hot path. Every failure is a 4xx error body; a bad request never reaches the model server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.config import Settings
from app.core.errors import AppError, PayloadTooLarge, ValidationFailed
from app.schemas.wire import find_fault
from app.services.upstream import Endpoint, ServedModel

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_CHOICES = 128  # `n`: vLLM has no limit of its own; every choice costs a sequence
_NUMBER = (int, float)


class ContentPolicyViolation(AppError):
    status_code, code = 400, "content_policy"


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]  # what goes upstream
    stream: bool
    client_wants_usage: bool
    messages: list[dict[str, Any]]
    endpoint: Endpoint = Endpoint.CHAT
    # /api/chat extras
    conversation_id: str | None = None
    save: bool = False
    system_prompt: str | None = None
    regenerate: bool = False


_SUSPECT = re.compile(rb"\\u0000|[0-9]{19}|[0-9][eE]")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        details = [{"field": "body", "message": "must be a JSON object"}]
        raise ValidationFailed("request body must be a JSON object", extra={"details": details})
    # a NUL can only come as the escape \u0000, and a number past 64 bits or not finite only
    # with 19 digits or more or an exponent: a body with none of these needs no walk
    fault = find_fault(body) if _SUSPECT.search(raw) is not None else None
    if fault is not None:  # NUL or a number past 64 bits, in any field: refused before upstream
        field, problem = fault
        raise ValidationFailed(
            f"{field}: {problem}", extra={"details": [{"field": field, "message": problem}]}
        )
    return body


def message_text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of OpenAI's list of content parts (other
    parts, an image say, carry no text); None when the content is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return None


def _content_text(message: dict[str, Any], i: int, *, ui: bool) -> str:
    """The text of one message, checked only as far as the gateway needs: the content is a
    string or a list of typed parts (any type: vLLM knows what the model takes); an assistant
    message may have none (`null` with `tool_calls`, or empty as a prefill)."""
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant":
            return ""
        raise ValidationFailed(f"messages.{i}.content: required", param=f"messages.{i}.content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and isinstance(part.get("type"), str)):
                raise ValidationFailed(
                    f"messages.{i}.content.{j}: must be an object with a `type`",
                    param=f"messages.{i}.content",
                )
            if ui and not (part["type"] == "text" and isinstance(part.get("text"), str)):
                # the UI sends text, and a conversation stores text: nothing would keep the rest
                raise ValidationFailed(
                    f"messages.{i}.content.{j}: /api/chat takes text parts only",
                    param=f"messages.{i}.content",
                )
        return message_text(content) or ""
    raise ValidationFailed(
        f"messages.{i}.content: must be a string or a list of content parts",
        param=f"messages.{i}.content",
    )


def _check_messages(messages: Any, settings: Settings, *, ui: bool) -> None:
    """Roles, sizes and the blocklist; every other field of a message passes through."""
    if not isinstance(messages, list) or not messages:
        raise ValidationFailed("messages: must be a non-empty list", param="messages")
    if len(messages) > settings.chat_max_messages:
        raise PayloadTooLarge(
            f"messages: at most {settings.chat_max_messages} messages per request"
        )
    total = 0
    blocklist = [w.lower() for w in settings.content_blocklist if w]
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValidationFailed(f"messages.{i}: must be an object", param=f"messages.{i}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # (an object is not hashable)
            raise ValidationFailed(
                f"messages.{i}.role: must be one of system, developer, user, assistant, tool",
                param=f"messages.{i}.role",
            )
        text = _content_text(message, i, ui=ui)
        if ui and role == "user" and not text.strip():  # the UI never sends an empty question
            raise ValidationFailed(
                f"messages.{i}.content: must not be empty", param=f"messages.{i}.content"
            )
        total += len(text)
        for key in ("reasoning", "reasoning_content"):  # interleaved thinking sent back
            value = message.get(key)
            if isinstance(value, str):
                total += len(value)
        if total > settings.chat_max_chars:
            raise PayloadTooLarge(
                f"messages: more than {settings.chat_max_chars} characters in all"
            )
        if blocklist and role in ("user", "system", "developer", "tool"):
            lowered = text.lower()
            if any(word in lowered for word in blocklist):
                raise ContentPolicyViolation("the message contains blocked content")


def _check_sampling(body: dict[str, Any], model: ServedModel) -> None:
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, _NUMBER)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        raise ValidationFailed("temperature: must be a number between 0 and 2", param="temperature")
    top_p = body.get("top_p")
    if top_p is not None and (
        not isinstance(top_p, _NUMBER) or isinstance(top_p, bool) or not 0 < top_p <= 1
    ):
        raise ValidationFailed("top_p: must be a number in (0, 1]", param="top_p")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValidationFailed(f"{key}: must be a positive integer", param=key)
        if model.max_model_len is not None and value > model.max_model_len:
            raise ValidationFailed(
                f"{key}: {value} exceeds the model's context length ({model.max_model_len})",
                code="context_length_exceeded",
                param=key,
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ValidationFailed("stream: must be a boolean", param="stream")
    n = body.get("n")
    if n is not None and (
        not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES
    ):
        raise ValidationFailed(f"n: must be an integer from 1 to {MAX_CHOICES}", param="n")


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ValidationFailed("stream_options: must be an object", param="stream_options")
    return bool(options.get("include_usage"))


def _upstream_body(body: dict[str, Any], model: ServedModel, stream: bool) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model.id
    out["stream"] = stream
    if stream:
        # always ask for the usage chunk: token counts come from the server, never estimated
        options = dict(out.get("stream_options") or {})
        options["include_usage"] = True
        out["stream_options"] = options
    else:
        out.pop("stream_options", None)
    return out


@dataclass(frozen=True, slots=True)
class GenerationBounds:
    """The served profile's sampling defaults and `max_tokens` default and ceiling."""

    defaults: dict[str, Any]
    default_max_tokens: int
    max_tokens_ceiling: int


MIN_DEFAULT_TOKENS = 16
# what a profile's `sampling` may never set: the request's own structure
_NOT_SAMPLING = frozenset({"model", "messages", "stream", "stream_options", "n"})


def bound_generation(
    req: ChatRequest, bounds: GenerationBounds, model: ServedModel, settings: Settings
) -> int:
    """Apply the profile's sampling defaults where the request sets none, and bound `max_tokens`:
    a request without one gets the default, one above the ceiling is capped to it (the openai
    SDK copes better with a shorter answer than with a refusal). Returns the bound (0 for
    embeddings, which generate nothing)."""
    body = req.body
    if req.endpoint is Endpoint.EMBEDDINGS:
        return 0
    for key, value in bounds.defaults.items():
        if key not in _NOT_SAMPLING and key not in ("max_tokens", "max_completion_tokens"):
            body.setdefault(key, value)
    ceiling = bounds.max_tokens_ceiling
    if model.max_model_len is not None:
        ceiling = min(ceiling, model.max_model_len)
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(asked, int) and not isinstance(asked, bool):
        bound = min(asked, ceiling)
    else:
        bound = min(bounds.default_max_tokens, ceiling)
        if model.max_model_len is not None:
            # a default must not make the server refuse what it would have answered (vLLM
            # refuses prompt + max_tokens > max_model_len): leave room for the prompt, estimated
            # without a tokenizer as a third of its UTF-8 bytes (English runs ~4 bytes a token,
            # Korean ~3); MIN_DEFAULT_TOKENS at least, the context being nearly full then anyway
            prompt_bytes = sum(
                len((message_text(m.get("content")) or "").encode()) for m in req.messages
            )
            for item in _prompt_items(body.get("prompt")):  # /v1/completions
                # a token id stands for a token: 3 bytes in this estimate
                prompt_bytes += len(item.encode()) if isinstance(item, str) else 3 * len(item)
            room = model.max_model_len - prompt_bytes // 3
            bound = max(min(bound, MIN_DEFAULT_TOKENS), min(bound, room))
    body["max_tokens"] = bound
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = bound
    return bound


def answer_count(req: ChatRequest) -> int:
    """How many answers a request asks for: `n` of each prompt (/v1/completions may send
    several); each may run to the `max_tokens` bound."""
    n = req.body.get("n")
    per_prompt = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    prompts = (
        len(_prompt_items(req.body.get("prompt"))) if req.endpoint is Endpoint.COMPLETIONS else 1
    )
    return per_prompt * max(1, prompts)


def _prompt_items(prompt: Any) -> list[Any]:
    """A prompt as its list of prompts: strings and token-id lists (a bare id list is one)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        return prompt if not all(isinstance(t, int) for t in prompt) else [prompt]
    return []


def _check_prompt(prompt: Any, settings: Settings, field: str) -> int:
    """`/v1/completions`' prompt or `/v1/embeddings`' input: a string, token ids, or a list of
    either; bounded like chat messages (count and characters). Returns how many prompts."""
    items = _prompt_items(prompt)
    if not items:
        raise ValidationFailed(
            f"{field}: must be a string, a list of strings or of token ids", param=field
        )
    if len(items) > settings.chat_max_messages:
        raise PayloadTooLarge(f"{field}: at most {settings.chat_max_messages} items per request")
    total = 0
    blocklist = [w.lower() for w in settings.content_blocklist if w]
    for i, item in enumerate(items):
        if isinstance(item, str):
            total += len(item)
            lowered = item.lower()
            if blocklist and any(word in lowered for word in blocklist):
                raise ContentPolicyViolation("the prompt contains blocked content")
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in item)
        ):
            total += len(item)
        else:
            raise ValidationFailed(
                f"{field}.{i}: must be a string or a non-empty list of token ids", param=field
            )
        if total > settings.chat_max_chars:
            raise PayloadTooLarge(f"{field}: more than {settings.chat_max_chars} characters")
    return len(items)


def openai_request(
    body: dict[str, Any],
    model: ServedModel,
    settings: Settings,
    endpoint: Endpoint = Endpoint.CHAT,
) -> ChatRequest:
    """`/v1/...`: OpenAI's body, every field the gateway does not need passed through."""
    if endpoint is Endpoint.EMBEDDINGS:
        _check_prompt(body.get("input"), settings, "input")
        if body.get("stream"):
            raise ValidationFailed("stream: embeddings are not streamed", param="stream")
        out = dict(body)
        out["model"] = model.id
        return ChatRequest(out, False, True, [], endpoint)
    if endpoint is Endpoint.COMPLETIONS:
        prompts = _check_prompt(body.get("prompt"), settings, "prompt")
        n = body.get("n")
        choices = prompts * (n if isinstance(n, int) and not isinstance(n, bool) else 1)
        if choices > MAX_CHOICES:  # every prompt is answered `n` times
            raise ValidationFailed(
                f"prompt: {prompts} prompts x n={n} asks for more than {MAX_CHOICES} answers",
                param="prompt",
            )
        messages: list[dict[str, Any]] = []
    else:
        _check_messages(body.get("messages"), settings, ui=False)
        messages = body["messages"]
    _check_sampling(body, model)
    stream = bool(body.get("stream", False))
    wants_usage = _wants_usage(body)
    return ChatRequest(_upstream_body(body, model, stream), stream, wants_usage, messages, endpoint)


_UI_FIELDS = ("temperature", "top_p", "max_tokens")


def ui_request(body: dict[str, Any], model: ServedModel, settings: Settings) -> ChatRequest:
    """`/api/chat`: the UI's body (SPEC §3 Chat); streams by default and saves by default."""
    _check_messages(body.get("messages"), settings, ui=True)
    _check_sampling(body, model)
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise ValidationFailed("conversation_id: must be a string")
    system_prompt = body.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValidationFailed("system_prompt: must be a string")
    for flag in ("save", "regenerate"):
        if flag in body and not isinstance(body[flag], bool):
            raise ValidationFailed(f"{flag}: must be a boolean")
    if body.get("regenerate") and conversation_id is None:
        # another answer to a turn needs the conversation the turn is in
        raise ValidationFailed("regenerate: needs a conversation_id")
    stream = body.get("stream", True)
    upstream = {"messages": [dict(m) for m in body["messages"]]}
    upstream.update({k: body[k] for k in _UI_FIELDS if body.get(k) is not None})
    return ChatRequest(
        body=_upstream_body(upstream, model, bool(stream)),
        stream=bool(stream),
        client_wants_usage=True,
        messages=upstream["messages"],
        conversation_id=conversation_id,
        save=bool(body.get("save", True)) or conversation_id is not None,
        system_prompt=system_prompt,
        regenerate=bool(body.get("regenerate", False)),
    )
