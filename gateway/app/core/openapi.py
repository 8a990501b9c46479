"""The OpenAPI document as the service answers: every error is the SPEC's `{"error": {...}}`.

FastAPI describes its 422s with its own `{"detail": [...]}` body, which this service never sends
(`install_error_handlers` turns every failure into the one error body). The document is
rewritten once, when first asked for: each operation's 422 and a `default` response (any other
error status: 401, 403, 404, 413, 415, 429, 431, 503, ...) point at `ErrorResponse`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "safe to show to the user"},
                "request_id": {
                    "type": ["string", "null"],
                    "description": "also in the X-Request-ID header",
                },
                "type": {"type": "string", "description": "/v1 only: OpenAI's error type"},
                "param": {
                    "type": ["string", "null"],
                    "description": "/v1 only: the request field at fault",
                },
                "details": {
                    "type": "array",
                    "description": "validation errors: one per field",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def error_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, routes=app.routes, description=app.description
    )
    for operations in doc.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error_response("Validation error")
            responses.setdefault("default", _error_response("Error"))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    app.openapi_schema = doc
    return doc


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: error_openapi(app)  # type: ignore[method-assign]
