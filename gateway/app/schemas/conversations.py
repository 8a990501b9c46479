"""Wire types for conversations, their messages and export, and the user's chat settings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.schemas.wire import RequestModel

TITLE_MAX_CHARS = 200
SYSTEM_PROMPT_MAX_CHARS = 20_000
MODEL_NAME_MAX_CHARS = 200


def _strip_title(value: str) -> str:
    value = " ".join(value.split())  # one line: titles end up in headings and sidebars
    if not value:
        raise ValueError("title must not be empty")
    return value


def _blank_is_none(value: str | None) -> str | None:
    # a whitespace-only system prompt is no prompt: None is the one way to say "not set"
    return value if value is not None and value.strip() else None


Title = Annotated[str, Field(max_length=TITLE_MAX_CHARS), AfterValidator(_strip_title)]
SystemPrompt = Annotated[
    str | None, Field(max_length=SYSTEM_PROMPT_MAX_CHARS), AfterValidator(_blank_is_none)
]


class ConversationCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    system_prompt: SystemPrompt = None
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_MAX_CHARS)


class ConversationUpdate(RequestModel):
    """PATCH: only the fields sent change; `system_prompt: null` clears it.

    A title, when sent, must be a non-empty string (`null` is refused like an empty one).
    """

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    system_prompt: SystemPrompt = None

    @field_validator("title")
    @classmethod
    def _title_not_null(cls, value: str | None) -> str | None:
        # runs only for a title that was sent: absent stays allowed, an explicit null does not
        if value is None:
            raise ValueError("title must not be null")
        return value


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str | None
    system_prompt: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime


class ConversationSummary(BaseModel):
    id: str
    title: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    preview: str | None = Field(description="the start of the last message")


class ConversationPage(BaseModel):
    conversations: list[ConversationSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class MessageVariant(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    role: str
    content: str
    reasoning: str | None = Field(
        default=None, description="a reasoning model's chain of thought, apart from the answer"
    )
    reasoning_ms: int | None = Field(default=None, description="how long the model thought")
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    status: str
    created_at: datetime


class MessageOut(MessageVariant):
    """A message; an answer that was regenerated also carries the turn's `variants`."""

    variants: list[MessageVariant] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="every answer of this turn (this one included); only on a regenerated turn",
    )
    variant_index: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="this answer's place in `variants`; only with `variants`",
    )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut] = Field(
        description="the conversation as shown: of a regenerated turn, the chosen answer"
    )


class ConversationExport(ConversationDetail):
    exported_at: datetime


class ExportFormat(StrEnum):
    JSON = "json"
    MARKDOWN = "md"


class UserSettingsIn(RequestModel):
    """PUT: a full replacement; a field left out is stored as null."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: SystemPrompt = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    language: Literal["ko", "en"] | None = None


class UserSettingsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    system_prompt: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    language: str | None = None
