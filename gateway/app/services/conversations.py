"""Conversations (list, read, edit, delete, export) and the user's default chat settings."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound, ValidationFailed
from app.db.base import utcnow
from app.db.models import Conversation, Message
from app.repositories.conversations import (
    ConversationRepository,
    PagePosition,
    UserSettingsRepository,
    canonical_conversation_id,
)
from app.schemas.conversations import (
    ConversationCreate,
    ConversationDetail,
    ConversationExport,
    ConversationOut,
    ConversationPage,
    ConversationSummary,
    ConversationUpdate,
    ExportFormat,
    MessageOut,
    MessageVariant,
    UserSettingsIn,
    UserSettingsOut,
)

log = structlog.get_logger()

NOT_FOUND = "conversation not found"


# --- the opaque list cursor ----------------------------------------------------------------------
def encode_cursor(position: PagePosition) -> str:
    raw = json.dumps([position.updated_at.isoformat(), position.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> PagePosition:
    """The position a cursor from `encode_cursor` stands for; anything else is a 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        if not (isinstance(decoded, list) and len(decoded) == 2):
            raise ValueError("not a pair")
        updated_at_text, conversation_id = decoded
        if not (isinstance(updated_at_text, str) and isinstance(conversation_id, str)):
            raise ValueError("not a pair of strings")
        updated_at = datetime.fromisoformat(updated_at_text)
        canonical = canonical_conversation_id(conversation_id)
        if updated_at.tzinfo is None or canonical is None:
            raise ValueError("not a position")
    except (ValueError, binascii.Error) as exc:
        raise ValidationFailed("cursor: not a cursor returned by this list") from exc
    return PagePosition(updated_at=updated_at, id=canonical)


# --- export --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExportedFile:
    filename: str
    media_type: str
    content: str


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


_STATUS_NOTES = {"partial": "stopped before the end", "error": "failed before the end"}


def render_markdown(doc: ConversationExport) -> str:
    """A readable transcript: title, facts, the system prompt if any, then each message."""
    lines = [f"# {doc.title or 'Untitled conversation'}", ""]
    lines.append(f"- Conversation: `{doc.id}`")
    if doc.model:
        lines.append(f"- Model: {doc.model}")
    lines += [
        f"- Created: {_when(doc.created_at)}",
        f"- Updated: {_when(doc.updated_at)}",
        f"- Exported: {_when(doc.exported_at)}",
        "",
    ]
    if doc.system_prompt:
        lines += ["## System prompt", "", doc.system_prompt, ""]
    lines += ["## Messages", ""]
    if not doc.messages:
        lines += ["_No messages yet._", ""]
    for message in doc.messages:
        facts = [_when(message.created_at)]
        if message.model:
            facts.append(message.model)
        if message.status in _STATUS_NOTES:
            facts.append(_STATUS_NOTES[message.status])
        if message.variants:
            facts.append(f"answer {(message.variant_index or 0) + 1} of {len(message.variants)}")
        lines += [f"### {message.role.capitalize()}", "", f"_{' · '.join(facts)}_", ""]
        lines += [message.content, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def shown_messages(messages: list[Message]) -> list[MessageOut]:
    """The conversation as read: each regenerated turn once, as its active answer, with all its
    answers in `variants` (in the order they were given)."""
    turns: dict[int, list[Message]] = {}
    for m in messages:
        if m.role == "assistant":
            turns.setdefault(m.variant_of or m.id, []).append(m)
    shown: list[MessageOut] = []
    for m in messages:
        if m.role != "assistant":
            shown.append(MessageOut.model_validate(m))
            continue
        turn = turns.get(m.id)
        if m.variant_of is not None or turn is None:
            continue  # a variant (listed with its turn's first answer), or an orphan's root
        if len(turn) == 1:
            shown.append(MessageOut.model_validate(m))
            continue
        index = next((i for i, v in enumerate(turn) if v.active), len(turn) - 1)
        out = MessageOut.model_validate(turn[index])
        out.variants = [MessageVariant.model_validate(v) for v in turn]
        out.variant_index = index
        shown.append(out)
    # a variant whose first answer is gone (never: it cascades) would be lost; keep it visible
    listed = {v.id for out in shown for v in out.variants or ()} | {out.id for out in shown}
    shown += [MessageOut.model_validate(m) for m in messages if m.id not in listed]
    return shown


def _detail(conversation: Conversation, messages: list[Message]) -> ConversationDetail:
    return ConversationDetail(
        **ConversationOut.model_validate(conversation).model_dump(),
        messages=shown_messages(messages),
    )


# --- conversations -------------------------------------------------------------------------------
class ConversationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.conversations = ConversationRepository(session)

    async def list_page(
        self, user_id: int, *, limit: int, cursor: str | None, query: str | None
    ) -> ConversationPage:
        after = decode_cursor(cursor) if cursor else None
        query = query.strip() if query else None
        rows = await self.conversations.page(user_id, limit=limit + 1, after=after, query=query)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1].conversation
            next_cursor = encode_cursor(PagePosition(last.updated_at, last.id))
        return ConversationPage(
            conversations=[
                ConversationSummary(
                    id=row.conversation.id,
                    title=row.conversation.title,
                    model=row.conversation.model,
                    created_at=row.conversation.created_at,
                    updated_at=row.conversation.updated_at,
                    message_count=row.message_count,
                    preview=row.preview,
                )
                for row in page
            ],
            next_cursor=next_cursor,
        )

    async def create(self, user_id: int, data: ConversationCreate) -> Conversation:
        now = utcnow()
        conversation = Conversation(
            user_id=user_id,
            title=data.title,
            system_prompt=data.system_prompt,
            model=data.model,
            created_at=now,
            updated_at=now,
        )
        self.conversations.add(conversation)
        await self.session.flush()
        log.info("conversation created", user_id=user_id, conversation_id=conversation.id)
        return conversation

    async def get(self, user_id: int, conversation_id: str) -> ConversationDetail:
        conversation = await self._owned(user_id, conversation_id)
        return _detail(conversation, await self.conversations.messages(conversation.id))

    async def update(
        self, user_id: int, conversation_id: str, data: ConversationUpdate
    ) -> Conversation:
        conversation = await self._owned(user_id, conversation_id)
        changes = data.model_dump(exclude_unset=True)
        if not changes:
            return conversation
        if "title" in changes:
            conversation.title = changes["title"]
        if "system_prompt" in changes:
            conversation.system_prompt = changes["system_prompt"]
        conversation.updated_at = utcnow()
        await self.session.flush()
        log.info("conversation updated", user_id=user_id, conversation_id=conversation.id)
        return conversation

    async def choose_variant(
        self, user_id: int, conversation_id: str, message_id: int
    ) -> ConversationDetail:
        """Make one answer of a regenerated turn the one shown (and sent as context)."""
        conversation = await self._owned(user_id, conversation_id)
        if not await self.conversations.activate_variant(conversation.id, message_id):
            raise NotFound("message not found", code="message_not_found")
        log.info("answer variant chosen", user_id=user_id, conversation_id=conversation.id)
        return _detail(conversation, await self.conversations.messages(conversation.id))

    async def delete(self, user_id: int, conversation_id: str) -> None:
        if not await self.conversations.delete_owned(conversation_id, user_id):
            raise NotFound(NOT_FOUND)
        log.info("conversation deleted", user_id=user_id, conversation_id=conversation_id)

    async def export(self, user_id: int, conversation_id: str, fmt: ExportFormat) -> ExportedFile:
        detail = await self.get(user_id, conversation_id)
        doc = ConversationExport(**detail.model_dump(), exported_at=utcnow())
        filename = f"conversation-{doc.id}.{fmt.value}"
        if fmt is ExportFormat.MARKDOWN:
            return ExportedFile(filename, "text/markdown; charset=utf-8", render_markdown(doc))
        return ExportedFile(filename, "application/json", doc.model_dump_json(indent=2))

    async def _owned(self, user_id: int, conversation_id: str) -> Conversation:
        conversation = await self.conversations.get_owned(conversation_id, user_id)
        if conversation is None:
            raise NotFound(NOT_FOUND)
        return conversation


class UserSettingsService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.settings = UserSettingsRepository(session)

    async def get(self, user_id: int) -> UserSettingsOut:
        """The stored settings, all null when never set (reading creates no row)."""
        row = await self.settings.get(user_id)
        return UserSettingsOut() if row is None else UserSettingsOut.model_validate(row)

    async def replace(self, user_id: int, data: UserSettingsIn) -> UserSettingsOut:
        """Store exactly `data` (a field left out becomes null), creating the row if needed."""
        row = await self.settings.upsert(user_id, data.model_dump())
        log.info("user settings saved", user_id=user_id)
        return UserSettingsOut.model_validate(row)
