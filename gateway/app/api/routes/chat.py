"""The chat routes: `/api/chat` (the UI) and the OpenAI-compatible `/v1` surface.

`POST /api/chat`, `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` are the hot
path (issue 3's figures: ~1,000 streamed requests/s on one worker). They are plain ASGI
endpoints registered on the app as Starlette routes, so FastAPI's dependency solving and body
parsing stay off that path, while the app's error handlers (the
SPEC's error body, OpenAI's shape on /v1), routing, 405s and the request-context middleware
apply as to every route. Their OpenAPI description is in `app.api.openapi`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.deps import CurrentPrincipal, get_principal
from app.core.errors import DatabaseUnavailable
from app.core.middleware import log_fields
from app.services.chat import ChatService
from app.services.upstream import Endpoint

router = APIRouter(tags=["chat"])


async def get_chat_service(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


class _NoAnswer(Response):
    """Sends nothing: the client is gone (the server logs no "returned without a response"
    for a disconnected client)."""

    def __init__(self) -> None:
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


class _Relay:
    """A plain ASGI endpoint (one instance per path, shared by its requests): POST only; another
    method is 405 `use POST` with `Allow`, through the app's error handler.

    Not a `HTTPEndpoint`: that builds a method table, a second `Request` and checks whether the
    handler is a coroutine on every request; this is the hot path (issue 17)."""

    endpoint = Endpoint.CHAT
    ui = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise HTTPException(405, "use POST", headers={"Allow": "POST"})
        response = await self.post(Request(scope, receive))
        await response(scope, receive, send)

    async def post(self, request: Request) -> Response:
        chat: ChatService = request.app.state.chat
        request_id = request.scope["state"].get("request_id")
        try:
            principal = await get_principal(request)
        except DatabaseUnavailable as err:  # the caller is unknown: a usage row without a user
            chat.record_refusal(self.ui, request_id, err)
            raise
        try:
            raw_body = await _body(request)
        except ClientDisconnect:  # the client left while sending its body: nobody to answer
            fields = log_fields(request)
            chat.client_left(principal, ui=self.ui, request_id=request_id, log_fields=fields)
            return _NoAnswer()
        return await chat.completion(
            principal,
            raw_body,
            ui=self.ui,
            endpoint=self.endpoint,
            request_id=request_id,
            log_fields=log_fields(request),
        )


async def _body(request: Request) -> bytes:
    """Starlette's `Request.body()` without the async generator it reads through (the hot
    path): the same messages, the same ClientDisconnect, the body kept on the request."""
    chunks: list[bytes] = []
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body
    request._stream_consumed = True
    return body


class UIChat(_Relay):
    ui = True


class ChatCompletions(_Relay):
    endpoint = Endpoint.CHAT


class Completions(_Relay):
    endpoint = Endpoint.COMPLETIONS


class Embeddings(_Relay):
    endpoint = Endpoint.EMBEDDINGS


RELAY_PATHS: dict[str, type[_Relay]] = {
    "/api/chat": UIChat,
    "/v1/chat/completions": ChatCompletions,
    "/v1/completions": Completions,
    "/v1/embeddings": Embeddings,
}


def relay_routes() -> list[Route]:
    return [
        # an instance, not the class: Starlette then calls it as a plain ASGI app (no
        # per-request endpoint object); it answers other methods itself. The app dispatches
        # these paths itself (`app.core.asgi`); they stay in the router for a root_path
        # request, url_for and the OpenAPI document.
        Route(path, endpoint(), include_in_schema=False)
        for path, endpoint in RELAY_PATHS.items()
    ]


def _openai_model(m: Any) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "max_model_len": m.max_model_len,
    }


@router.get("/v1/models")
async def openai_models(_: CurrentPrincipal, chat: ChatServiceDep) -> dict[str, Any]:
    models = await chat.list_models()
    return {"object": "list", "data": [_openai_model(m) for m in models]}


@router.get("/v1/models/{model_id:path}")
async def openai_model(model_id: str, _: CurrentPrincipal, chat: ChatServiceDep) -> dict[str, Any]:
    """One model by its id, profile id or alias (`client.models.retrieve`); the answer names the
    served model's id."""
    return _openai_model(await chat.upstream.resolve(model_id))


@router.get("/api/models")
async def ui_models(_: CurrentPrincipal, chat: ChatServiceDep) -> dict[str, Any]:
    models = await chat.list_models()
    # max_model_len lets the UI refuse a prompt that cannot fit before sending it
    return {
        "models": [
            {"id": m.id, "name": m.id, "status": "running", "max_model_len": m.max_model_len}
            for m in models
        ]
    }
