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
from app.services.chat_writer import NEW_VARIANT, ChatWriter

log = structlog.get_logger()

TITLE_MAX_CHARS = 80


@dataclass(slots=True)
class Exchange:
    conversation_id: str | None
    system_prompt: str | None  # to prepend: the request has no system message of its own
    needs_title: bool
    question: str | None
    regenerate: bool = False  # the answer is another variant of the last one


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
                    if row.title is None and question is not None and not req.regenerate:
                        # created without a title (POST /api/conversations): its first
                        # question names it, like a conversation the chat created
                        self.writer.set_title(conversation_id, fallback_title(question))
                        needs_title = self.title_generation
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
            # the question's first words are the title at once (the sidebar never shows an
            # untitled conversation); a generated title may replace them after the answer
            title = None if question is None else fallback_title(question)
            needs_title = self.title_generation and title is not None
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
        return Exchange(conversation_id, system_prompt, needs_title, question, req.regenerate)

    async def finish(
        self, conversation_id: str, outcome: StreamOutcome, model_id: str, *, variant: bool = False
    ) -> None:
        """Queue the answer; a partial (cut) or failed one is kept and marked so."""
        text = "".join(outcome.text)
        reasoning = "".join(outcome.reasoning) or None
        if reasoning is None:  # a server without a reasoning parser: `<think>...</think>` inline
            reasoning, text = split_think(text)
        if not text and not reasoning:
            return
        if outcome.status_code == 200:
            status = "complete"
        elif outcome.status_code == CLIENT_CLOSED or outcome.cut:
            status = "partial"  # cut before its end: client gone, shutdown, time limit
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
        if variant:
            row[NEW_VARIANT] = True
        await self.writer.add_message(row)
        self.writer.touch(conversation_id, now, model_id)

    async def replace_fallback_title(self, conversation_id: str, question: str, title: str) -> None:
        """The generated title replaces the question's first words, unless the user renamed
        the conversation meanwhile (then its title is no longer those words)."""
        self.writer.set_title(conversation_id, title, replaces=fallback_title(question))


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
        "variant_of": None,
        "active": True,
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


GENERATED_TITLE_MAX_CHARS = 60
GENERATED_TITLE_MAX_WORDS = 8
_REFUSAL = re.compile(
    r"\b(sorry|apolog|i can'?t|i cannot|i'm unable|i am unable|as an ai|language model)\b"
    r"|죄송|할 수 없|수 없습니다|못합니다|AI 모델|언어 모델",
    re.IGNORECASE,
)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_WORD = re.compile(r"[^\W_]+")
_DIGITS = re.compile(r"\d+")
_PARTICLES = frozenset("은는이가을를의에도로와과요다니까습까나고서한하인것수")
_STOPWORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "is",
        "are",
        "was",
        "were",
        "be",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "what",
        "how",
        "why",
        "who",
        "when",
        "where",
        "which",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "i",
        "you",
        "me",
        "my",
        "your",
        "it",
        "this",
        "that",
        "with",
        "about",
        "please",
    ]
)


def clean_title(raw: str) -> str | None:
    """The model's title, one line, without quotes or a "Title:" prefix; None when unusable."""
    line = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "")
    line = re.sub(r"^(title|제목)\s*[:\uff1a]\s*", "", line, flags=re.IGNORECASE)
    line = line.strip(" \"'`*#\u201c\u201d\u2018\u2019\u300c\u300d")
    if not line:
        return None
    return line if len(line) <= TITLE_MAX_CHARS else line[: TITLE_MAX_CHARS - 1] + "…"


def _normal(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _keys(text: str) -> set[str]:
    """What two texts on one subject share: content words, and Hangul syllables other than
    particles and endings (Korean words inflect: 곱셈 / 곱하기)."""
    keys: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if _HANGUL.search(word):
            keys.update(ch for ch in word if _HANGUL.match(ch) and ch not in _PARTICLES)
        elif word not in _STOPWORDS and (len(word) > 2 or word.isdigit()):
            keys.add(word)
    return keys


def good_title(raw: str, question: str, answer: str = "") -> str | None:
    """A generated title worth showing, or None for the question's first words instead.

    A small model's title is often worse than none: empty, a paragraph, a refusal, the first
    line of its (possibly wrong) answer ("12 * 7 = 80"), or words unrelated to the question.
    """
    title = clean_title(raw)
    if title is None:
        return None
    if len(title) > GENERATED_TITLE_MAX_CHARS or len(title.split()) > GENERATED_TITLE_MAX_WORDS:
        return None
    if _REFUSAL.search(title):
        return None
    if bool(_HANGUL.search(question)) != bool(_HANGUL.search(title)):
        return None  # not in the language of the question
    # numbers the question does not contain are the answer's (a result, maybe a wrong one)
    if set(_DIGITS.findall(title)) - set(_DIGITS.findall(question)):
        return None
    normal_title, normal_question = _normal(title), _normal(question)
    if not normal_title:
        return None
    if normal_title in _normal(answer) and normal_title not in normal_question:
        return None  # an echo of the answer
    question_keys = _keys(question)
    if question_keys and not question_keys & _keys(title):
        return None  # about something else
    return title
