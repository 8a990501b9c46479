"""Domain errors and the one place that turns any failure into the SPEC's error body."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from app.core.request_context import current_request_id

log = structlog.get_logger()


class AppError(Exception):
    """A failure with a status, a stable code and a message safe to show to the client."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault (OpenAI's `param` on /v1)
        self.extra = dict(extra or {})  # more fields for the error body (e.g. `reasons`)
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status_code, code = 400, "bad_request"


class Unauthorized(AppError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str = "authentication required", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(AppError):
    status_code, code = 403, "forbidden"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


class ValidationFailed(AppError):
    status_code, code = 422, "validation_error"


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        headers["Retry-After"] = str(max(1, retry_after_s))
        super().__init__(message, headers=headers, **kw)
        self.retry_after_s = max(1, retry_after_s)


class ServiceUnavailable(AppError):
    status_code, code = 503, "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable, try again shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


def is_openai_path(path: str) -> bool:
    """The OpenAI-compatible surface, whose errors follow OpenAI's and vLLM's shape."""
    return path.startswith("/v1/") or path == "/v1"


def openai_status(status: int) -> int:
    """OpenAI and vLLM answer an invalid request with 400, never 422 (the SDK's
    `BadRequestError`)."""
    return 400 if status == 422 else status


def openai_error_type(status: int) -> str:
    """vLLM's `type` for a status: the reason phrase in CamelCase, e.g. `BadRequestError`."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "Error"
    return phrase.replace(" ", "").replace("-", "").replace("'", "") + "Error"


def error_body(
    code: str,
    message: str,
    *,
    openai_for: int | None = None,
    param: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The SPEC's error body; with `openai_for` (the status) also OpenAI's `type` and `param`."""
    err: dict[str, Any] = {"code": code, "message": message, "request_id": current_request_id()}
    if openai_for is not None:
        err["type"] = openai_error_type(openai_for)
        err["param"] = param
    err.update(extra)
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    openai: bool = False,
    param: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """One error; `openai=True` on the /v1 surface (400 for 422, `type` and `param` added)."""
    if openai:
        status = openai_status(status)
        body = error_body(code, message, openai_for=status, param=param, **extra)
    else:
        body = error_body(code, message, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def error_param(err: AppError) -> str | None:
    """The request field at fault: the error's own, else its first validation detail's."""
    if err.param is not None:
        return err.param
    details = err.extra.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        field = details[0].get("field")
        return field if isinstance(field, str) else None
    return None


def app_error_response(err: AppError, *, openai: bool = False) -> JSONResponse:
    return error_response(
        err.status_code,
        err.code,
        err.message,
        err.headers,
        openai=openai,
        param=error_param(err),
        **err.extra,
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str, list[dict[str, Any]]]:
    details: list[dict[str, Any]] = []
    code = "validation_error"
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            code = "invalid_json"
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        details.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", ""))})
    if code == "invalid_json":
        return code, "request body is not valid JSON", []
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    return code, f"{first['field']}: {first['message']}", details


# what FastAPI raises (400) when json.loads fails with anything but a JSONDecodeError
_FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return app_error_response(exc, openai=is_openai_path(request.url.path))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        code, message, details = _describe_validation(exc)
        openai = is_openai_path(request.url.path)
        param = details[0]["field"] if details else None
        if details:
            return error_response(422, code, message, openai=openai, param=param, details=details)
        return error_response(422, code, message, openai=openai)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == _FASTAPI_UNPARSABLE_BODY:
            # bytes json cannot decode (not UTF-8, nested past the recursion limit): broken
            # JSON like any other, as the chat routes' own parser says
            return error_response(
                422,
                "invalid_json",
                "request body is not valid JSON",
                openai=is_openai_path(request.url.path),
            )
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(
            exc.status_code, code, message, exc.headers, openai=is_openai_path(request.url.path)
        )

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def is_database_outage(exc: BaseException) -> bool:
    """Connection-level database failures (refused, reset, pool timeout), not query bugs."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OSError | TimeoutError | InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def response_for_unexpected(exc: BaseException) -> JSONResponse:
    """The body for an exception no handler claimed: never a traceback, 503 for a DB outage."""
    if is_database_outage(exc):
        log.warning("database unavailable", error=type(exc).__name__, detail=str(exc)[:200])
        err = DatabaseUnavailable()
        return error_response(err.status_code, err.code, err.message, err.headers)
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")
