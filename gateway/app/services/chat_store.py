"""What a chat exchange writes: the conversation, the user's message before the model is asked
(so it is never lost), the answer (complete, partial or cut by an error) afterwards, a title."""

from __future__ import annotations

import re
from dataclasses import dataclass

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import NotFound
from app.db.base import utcnow
from app.db.models import Conversation, Message
from app.db.models.conversation import new_conversation_id
from app.repositories.conversations import ConversationRepository
from app.services.chat_request import ChatRequest, message_text
from app.services.chat_stream import CLIENT_CLOSED, StreamOutcome
from app.services.conversations import effective_system_prompt

log = structlog.get_logger()

TITLE_MAX_CHARS = 80


@dataclass(slots=True)
class Exchange:
    conversation_id: str | None
    system_prompt: str | None  # to prepend: the request has no system message of its own
    needs_title: bool
    question: str | None


class ChatStore:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def begin(self, user_id: int, req: ChatRequest, model_id: str) -> Exchange:
        """Resolve or create the conversation and store the new user message, in one transaction."""
        last = req.messages[-1]
        question = message_text(last.get("content")) if last.get("role") == "user" else None
        has_system = any(m.get("role") == "system" for m in req.messages)
        async with self.session_factory.begin() as session:
            conversation: Conversation | None = None
            if req.conversation_id is not None:
                conversation = await ConversationRepository(session).get_owned(
                    req.conversation_id, user_id
                )
                if conversation is None:
                    raise NotFound("conversation not found")
            system_prompt = None
            if not has_system:
                system_prompt = req.system_prompt or await effective_system_prompt(
                    session, user_id, conversation
                )
            if conversation is None and not req.save:
                return Exchange(None, system_prompt, False, question)
            now = utcnow()
            if conversation is None:
                conversation = Conversation(
                    id=new_conversation_id(),
                    user_id=user_id,
                    model=model_id,
                    system_prompt=req.system_prompt,
                    created_at=now,
                    updated_at=now,
                )
                session.add(conversation)
            else:
                conversation.updated_at = now
                conversation.model = model_id
            if question is not None and not req.regenerate:
                session.add(
                    Message(
                        conversation_id=conversation.id,
                        role="user",
                        content=question,
                        created_at=now,
                    )
                )
            return Exchange(conversation.id, system_prompt, conversation.title is None, question)

    async def finish(self, conversation_id: str, outcome: StreamOutcome, model_id: str) -> None:
        """Store the answer; a partial (client stopped) or failed one is kept and marked so."""
        text = "".join(outcome.text)
        if not text:
            return
        if outcome.status_code == 200:
            status = "complete"
        elif outcome.status_code == CLIENT_CLOSED:
            status = "partial"
        else:
            status = "error"
        now = utcnow()
        async with self.session_factory.begin() as session:
            session.add(
                Message(
                    conversation_id=conversation_id,
                    role="assistant",
                    content=text,
                    model=model_id,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    status=status,
                    created_at=now,
                )
            )
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(updated_at=now)
            )

    async def set_title(self, conversation_id: str, title: str) -> None:
        async with self.session_factory.begin() as session:
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.title.is_(None))
                .values(title=title)
            )


def fallback_title(question: str) -> str:
    words = question.split()
    title = " ".join(words[:8])
    return (
        (title[: TITLE_MAX_CHARS - 1] + "…")
        if len(title) > TITLE_MAX_CHARS
        else title or "New chat"
    )


def clean_title(raw: str) -> str | None:
    """The model's title, one line, without quotes or a "Title:" prefix; None when unusable."""
    line = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "")
    line = re.sub(r"^(title|제목)\s*[:\uff1a]\s*", "", line, flags=re.IGNORECASE)
    line = line.strip(" \"'`*#\u201c\u201d\u2018\u2019\u300c\u300d")
    if not line:
        return None
    return line if len(line) <= TITLE_MAX_CHARS else line[: TITLE_MAX_CHARS - 1] + "…"
