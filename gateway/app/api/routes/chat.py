"""Chat completions for the UI (`/api/chat`) and for API clients (`/v1`, OpenAI-compatible)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.deps import CurrentPrincipal
from app.core.middleware import log_fields
from app.services.chat import ChatService

router = APIRouter(tags=["chat"])


async def get_chat_service(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


async def _complete(request: Request, principal: Any, chat: ChatService, *, ui: bool) -> Response:
    return await chat.completion(
        principal,
        await request.body(),
        ui=ui,
        request_id=request.scope["state"].get("request_id"),
        log_fields=log_fields(request),
    )


@router.post("/api/chat", response_model=None)
async def ui_chat(request: Request, principal: CurrentPrincipal, chat: ChatServiceDep) -> Response:
    """The UI's chat: SSE by default, saved in a conversation (`X-Conversation-ID`)."""
    return await _complete(request, principal, chat, ui=True)


@router.post("/v1/chat/completions", response_model=None)
async def openai_chat(
    request: Request, principal: CurrentPrincipal, chat: ChatServiceDep
) -> Response:
    """OpenAI's chat completions, relayed from the model server as it sends them."""
    return await _complete(request, principal, chat, ui=False)


@router.get("/v1/models")
async def openai_models(_: CurrentPrincipal, chat: ChatServiceDep) -> dict[str, Any]:
    models = await chat.list_models()
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": m.owned_by,
                "max_model_len": m.max_model_len,
            }
            for m in models
        ],
    }


@router.get("/api/models")
async def ui_models(_: CurrentPrincipal, chat: ChatServiceDep) -> dict[str, Any]:
    models = await chat.list_models()
    return {"models": [{"id": m.id, "name": m.id, "status": "running"} for m in models]}
