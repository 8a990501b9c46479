"""The OpenAPI document: FastAPI's routes with the SPEC's error body (`app.core.openapi`), plus
the relay endpoints FastAPI cannot see (raw Starlette endpoints, `app.api.routes.chat`) with
their request and response schemas, and the bearer scheme on every authenticated route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.core.openapi import error_openapi

BEARER = "bearer"
_PUBLIC = {"/api/auth/login", "/health", "/health/live", "/health/ready", "/metrics"}

_CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
    "additionalProperties": True,
    "description": "Any OpenAI/vLLM content part (text, image_url, input_audio, ...), relayed",
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ContentPart"}},
                {"type": "null"},
            ]
        },
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
        "reasoning": {"type": "string"},
    },
    "additionalProperties": True,
}
_SAMPLING = {
    "model": {"type": "string", "description": "served model id, profile id, alias or current"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "stream": {"type": "boolean"},
}
_MESSAGES = {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": _MESSAGES,
        **_SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "stream_options": {"type": "object"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {},
        "response_format": {"type": "object"},
    },
    "additionalProperties": True,
    "description": "OpenAI's chat request; every field not listed is relayed to vLLM untouched",
}
_UI_CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": _MESSAGES,
        **_SAMPLING,
        "conversation_id": {"type": "string"},
        "system_prompt": {"type": "string"},
        "save": {"type": "boolean"},
        "regenerate": {"type": "boolean"},
    },
}
_PROMPT = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        },
    ]
}
_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["prompt"],
    "properties": {"prompt": _PROMPT, **_SAMPLING, "n": {"type": "integer", "minimum": 1}},
    "additionalProperties": True,
}
_EMBEDDING_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": _PROMPT,
        "model": _SAMPLING["model"],
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": True,
}
_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}
_CHAT_COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string"},
                            "content": {"type": ["string", "null"]},
                            "reasoning": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "logprobs": {},
                    "finish_reason": {"type": ["string", "null"]},
                },
            },
        },
        "usage": {"$ref": "#/components/schemas/Usage"},
        "conversation_id": {"type": "string", "description": "/api/chat only"},
    },
}
_COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["text_completion"]},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}
_EMBEDDINGS = {
    "type": "object",
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"type": "object"}},
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}
_SSE = {
    "type": "object",
    "description": 'One server-sent event: `data: {chunk}` per event, `data: {"error": ...}` '
    "for a failure after the start, and `data: [DONE]` last",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}

_ERRORS = {
    "401": "Not authenticated",
    "404": "Unknown model (`model_not_found`)",
    "413": "Too many messages or characters",
    "429": "Rate limited (`Retry-After`)",
    "502": "The model server failed",
    "503": "The model server is not ready or switching (`Retry-After`)",
    "504": "The model server timed out",
}


def _operation(
    summary: str, request: str, response: str, *, stream: bool, invalid: str
) -> dict[str, Any]:
    ok: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
    }
    if stream:
        ok["text/event-stream"] = {"schema": _SSE}
    responses: dict[str, Any] = {"200": {"description": "The answer", "content": ok}}
    responses[invalid] = {"description": "Invalid request"}
    responses.update({code: {"description": text} for code, text in _ERRORS.items()})
    responses["default"] = {"description": "Error"}
    for value in responses.values():
        if value["description"] != "The answer":
            value["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            }
    return {
        "post": {
            "tags": ["chat"],
            "summary": summary,
            "operationId": summary.lower().replace(" ", "_").replace("/", "_"),
            "security": [{BEARER: []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                },
            },
            "responses": responses,
        }
    }


def relay_paths() -> dict[str, Any]:
    return {
        "/api/chat": _operation(
            "Chat (web UI)", "UIChatRequest", "ChatCompletion", stream=True, invalid="422"
        ),
        "/v1/chat/completions": _operation(
            "Create chat completion",
            "ChatCompletionRequest",
            "ChatCompletion",
            stream=True,
            invalid="400",
        ),
        "/v1/completions": _operation(
            "Create completion", "CompletionRequest", "Completion", stream=True, invalid="400"
        ),
        "/v1/embeddings": _operation(
            "Create embeddings", "EmbeddingRequest", "Embeddings", stream=False, invalid="400"
        ),
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = error_openapi(app)  # FastAPI's routes, every error as the SPEC's body
        components = doc.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A JWT from /api/auth/login or an API key (sk-...)",
        }
        components.setdefault("schemas", {}).update(
            {
                "ContentPart": _CONTENT_PART,
                "ChatMessage": _MESSAGE,
                "ChatCompletionRequest": _CHAT_REQUEST,
                "UIChatRequest": _UI_CHAT_REQUEST,
                "CompletionRequest": _COMPLETION_REQUEST,
                "EmbeddingRequest": _EMBEDDING_REQUEST,
                "Usage": _USAGE,
                "ChatCompletion": _CHAT_COMPLETION,
                "Completion": _COMPLETION,
                "Embeddings": _EMBEDDINGS,
            }
        )
        paths = doc.setdefault("paths", {})
        for path, operations in paths.items():
            if path in _PUBLIC or not (path.startswith("/api/") or path.startswith("/v1/")):
                continue
            for operation in operations.values():
                operation.setdefault("security", [{BEARER: []}])
        paths.update(relay_paths())
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
