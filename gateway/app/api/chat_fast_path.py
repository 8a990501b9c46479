"""`/api/chat` and `/v1/chat/completions`, served without FastAPI's per-request machinery.

These two routes are the hot path (issue 3's figures: ~1,000 streamed requests/s on one worker).
Routing, dependency solving and the exception middlewares cost more CPU than the relay itself,
so this small ASGI layer answers them directly, inside `RequestContextMiddleware` (request id,
body limit, access log) and with the same authentication and error body as every other route.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import get_principal
from app.core.errors import AppError, DatabaseUnavailable, error_response
from app.core.middleware import log_fields
from app.services.auth import Principal
from app.services.chat import ChatService

CHAT_PATHS = {"/api/chat": True, "/v1/chat/completions": False}  # path -> the UI's flavour


class ChatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ui = CHAT_PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if ui is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await error_response(405, "method_not_allowed", "use POST", {"Allow": "POST"})(
                scope, receive, send
            )
            return
        request = Request(scope, receive)
        chat: ChatService = scope["app"].state.chat
        principal: Principal | None = None
        request_id = scope["state"].get("request_id")
        try:
            principal = await get_principal(request)
            try:
                raw_body = await request.body()
            except ClientDisconnect:  # the client left while sending its body: nobody to answer
                chat.client_left(
                    principal, ui=ui, request_id=request_id, log_fields=log_fields(request)
                )
                return
            relay = await chat.completion(
                principal,
                raw_body,
                ui=ui,
                request_id=request_id,
                log_fields=log_fields(request),
            )
        except AppError as err:
            if isinstance(err, DatabaseUnavailable) and principal is None:
                chat.record_refusal(ui, request_id, err)
            await error_response(err.status_code, err.code, err.message, err.headers, **err.extra)(
                scope, receive, send
            )
            return
        except HTTPException as exc:  # the body limit, raised while reading
            await error_response(exc.status_code, "payload_too_large", str(exc.detail))(
                scope, receive, send
            )
            return
        await relay(scope, receive, send)
