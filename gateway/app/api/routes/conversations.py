from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from app.api.deps import CurrentPrincipal, SessionDep
from app.schemas.conversations import (
    ConversationCreate,
    ConversationDetail,
    ConversationExport,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    ExportFormat,
)
from app.services.conversations import ConversationService


async def flush_chat_writes(request: Request) -> None:
    """Read your own writes: chat exchanges this process has queued are written first."""
    await request.app.state.chat_writer.flush()


router = APIRouter(
    prefix="/api/conversations", tags=["conversations"], dependencies=[Depends(flush_chat_writes)]
)


async def get_conversation_service(session: SessionDep) -> ConversationService:
    return ConversationService(session)


ConversationServiceDep = Annotated[ConversationService, Depends(get_conversation_service)]


@router.get("")
async def list_conversations(
    principal: CurrentPrincipal,
    conversations: ConversationServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    q: Annotated[str | None, Query(max_length=200, description="title or message text")] = None,
) -> ConversationPage:
    return await conversations.list_page(principal.user_id, limit=limit, cursor=cursor, query=q)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    body: ConversationCreate, principal: CurrentPrincipal, conversations: ConversationServiceDep
) -> ConversationOut:
    return ConversationOut.model_validate(await conversations.create(principal.user_id, body))


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: str, principal: CurrentPrincipal, conversations: ConversationServiceDep
) -> ConversationDetail:
    return await conversations.get(principal.user_id, conversation_id)


@router.patch("/{conversation_id}")
async def update_conversation(
    conversation_id: str,
    body: ConversationUpdate,
    principal: CurrentPrincipal,
    conversations: ConversationServiceDep,
) -> ConversationOut:
    updated = await conversations.update(principal.user_id, conversation_id, body)
    return ConversationOut.model_validate(updated)


@router.put("/{conversation_id}/messages/{message_id}/active")
async def choose_variant(
    conversation_id: str,
    message_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    principal: CurrentPrincipal,
    conversations: ConversationServiceDep,
) -> ConversationDetail:
    """Show this answer of a regenerated turn (the others stay, one switch away)."""
    return await conversations.choose_variant(principal.user_id, conversation_id, message_id)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_conversation(
    conversation_id: str, principal: CurrentPrincipal, conversations: ConversationServiceDep
) -> None:
    await conversations.delete(principal.user_id, conversation_id)


@router.get(
    "/{conversation_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "the conversation as a file (`format=json` or `md`)",
            "model": ConversationExport,
            "content": {"text/markdown": {"schema": {"type": "string"}}},
        }
    },
)
async def export_conversation(
    conversation_id: str,
    principal: CurrentPrincipal,
    conversations: ConversationServiceDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.JSON,
) -> Response:
    exported = await conversations.export(principal.user_id, conversation_id, export_format)
    return Response(
        exported.content,
        media_type=exported.media_type,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )
