"""The served models, for the UI (`/api/models`) and for API clients (`/v1/models`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.api.deps import CurrentPrincipal
from app.services.chat import ChatService

router = APIRouter(tags=["chat"])


async def get_chat_service(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


# POST /api/chat and POST /v1/chat/completions are served by app.api.chat_fast_path.


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
    # max_model_len lets the UI refuse a prompt that cannot fit before sending it
    return {
        "models": [
            {"id": m.id, "name": m.id, "status": "running", "max_model_len": m.max_model_len}
            for m in models
        ]
    }
