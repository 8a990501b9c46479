"""What a chat exchange stores: the conversation, the user's message (queued before the model is
asked, so an upstream failure never loses it), the answer (complete, partial or cut), a title."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import NotFound
from app.db.base import utcnow
from app.db.models import Conversation, UserSettings
from app.db.models.conversation import new_conversation_id
from app.repositories.conversations import canonical_conversation_id
from app.services.chat_request import ChatRequest, message_text
from app.services.chat_stream import CLIENT_CLOSED, StreamOutcome
from app.services.chat_writer import ChatWriter

log = structlog.get_logger()

TITLE_MAX_CHARS = 80


@dataclass(slots=True)
class Exchange:
    conversation_id: str | None
    system_prompt: str | None  # to prepend: the request has no system message of its own
    needs_title: bool
    question: str | None


class ChatStore:
    """What a chat exchange reads (ownership, the default system prompt) and writes.

    The reads happen before the model is asked; the writes (conversation, user message, answer,
    title) go to the `ChatWriter`'s batches, so no transaction sits on the request path.
    """

    def __init__(self, engine: AsyncEngine, writer: ChatWriter, *, title_generation: bool) -> None:
        # reads are single statements: no BEGIN/ROLLBACK round trips around them
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.writer = writer
        self.title_generation = title_generation

    async def begin(self, user_id: int, req: ChatRequest, model_id: str) -> Exchange:
        """Check or create the conversation and queue the new user message."""
        last = req.messages[-1]
        question = message_text(last.get("content")) if last.get("role") == "user" else None
        has_system = any(m.get("role") == "system" for m in req.messages)
        now = utcnow()
        conversation_id: str | None = None
        system_prompt = req.system_prompt
        needs_title = False
        async with self.reader.connect() as conn:
            if req.conversation_id is not None:
                conversation_id = canonical_conversation_id(req.conversation_id)
                if conversation_id is None:
                    raise NotFound("conversation not found")
                owner = self.writer.pending_owner(conversation_id)
                if owner is None:
                    row = (
                        await conn.execute(
                            select(Conversation.system_prompt, Conversation.title).where(
                                Conversation.id == conversation_id, Conversation.user_id == user_id
                            )
                        )
                    ).first()
                    if row is None:
                        raise NotFound("conversation not found")
                    system_prompt = system_prompt or row.system_prompt
                    needs_title = row.title is None
                elif owner != user_id:
                    raise NotFound("conversation not found")
            if not has_system and not system_prompt:
                system_prompt = await conn.scalar(
                    select(UserSettings.system_prompt).where(UserSettings.user_id == user_id)
                )
        if has_system:
            system_prompt = None
        if conversation_id is None:
            if not req.save:
                return Exchange(None, system_prompt, False, question)
            conversation_id = new_conversation_id()
            # without a title model the title is the question's first words, written at once
            title = None if self.title_generation or question is None else fallback_title(question)
            needs_title = title is None
            await self.writer.add_conversation(
                {
                    "id": conversation_id,
                    "user_id": user_id,
                    "title": title,
                    "model": model_id,
                    "system_prompt": req.system_prompt,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        else:
            self.writer.touch(conversation_id, now, model_id)
        if question is not None and not req.regenerate:
            await self.writer.add_message(_message(conversation_id, "user", question, now))
        return Exchange(conversation_id, system_prompt, needs_title, question)

    async def finish(self, conversation_id: str, outcome: StreamOutcome, model_id: str) -> None:
        """Queue the answer; a partial (client stopped) or failed one is kept and marked so."""
        text = "".join(outcome.text)
        reasoning = "".join(outcome.reasoning) or None
        if reasoning is None:  # a server without a reasoning parser: `<think>...</think>` inline
            reasoning, text = split_think(text)
        if not text and not reasoning:
            return
        if outcome.status_code == 200:
            status = "complete"
        elif outcome.status_code == CLIENT_CLOSED:
            status = "partial"
        else:
            status = "error"
        now = utcnow()
        row = _message(conversation_id, "assistant", text, now, status=status, model=model_id)
        row.update(
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            reasoning=reasoning,
            reasoning_ms=reasoning_ms(outcome) if reasoning else None,
        )
        await self.writer.add_message(row)
        self.writer.touch(conversation_id, now, model_id)

    async def set_title(self, conversation_id: str, title: str) -> None:
        self.writer.set_title(conversation_id, title)


def _message(
    conversation_id: str,
    role: str,
    content: str,
    when: datetime,
    *,
    status: str = "complete",
    model: str | None = None,
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "role": role,
        "content": content,
        "reasoning": None,
        "reasoning_ms": None,
        "model": model,
        "prompt_tokens": None,
        "completion_tokens": None,
        "status": status,
        "created_at": when,
    }


_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)(.*)$", re.DOTALL)


def split_think(text: str) -> tuple[str | None, str]:
    """`<think>reasoning</think>answer` (a server without vLLM's reasoning parser) → the two
    parts; any other text → (None, text) unchanged."""
    match = _THINK.match(text)
    if match is None:
        return None, text
    return match.group(1).strip() or None, match.group(2).lstrip()


def reasoning_ms(outcome: StreamOutcome) -> int | None:
    """How long the model thought: from its first token to the first token of the answer (or
    to the end, when it never answered)."""
    if outcome.ttft_ms is None:
        return None
    end = outcome.answer_ttft_ms if outcome.answer_ttft_ms is not None else outcome.latency_ms
    return None if end is None else max(0, end - outcome.ttft_ms)


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
