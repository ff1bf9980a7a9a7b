"""Conversation bodies: stored chat histories, their messages, token usage and pruning."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import EntityId
from schemas.openai import DevOptions

MAX_CONTENT_CHARS = 1_000_000


class ConversationCreate(BaseModel):
    """`POST /v1/conversations`."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=500)
    model: str = Field(min_length=1, max_length=256)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)


class ConversationUpdate(BaseModel):
    """`PATCH /v1/conversations/{id}`: only the fields sent change; null clears title/prompt."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)


class MessageCreate(BaseModel):
    """`POST /v1/conversations/{id}/messages`: one user turn, answered by the conversation's model.

    The generation knobs are passed through to the chat job unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    dev_options: DevOptions | None = None


class MessageRead(BaseModel):
    id: int
    role: str
    content: str
    tokens: int
    created_at: datetime
    job_id: str | None = None


class ConversationRead(BaseModel):
    id: str
    title: str | None
    model: str
    system_prompt: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime
    last_pruning: dict[str, Any] | None = None
    messages: list[MessageRead] | None = None


class ConversationList(BaseModel):
    conversations: list[ConversationRead]
    total: int
    limit: int
    offset: int


class TokenUsage(BaseModel):
    """`GET /v1/conversations/{id}/token-usage`: what the next request's history costs."""

    total: int
    by_role: dict[str, int]
    context_limit: int | None
    utilization_percent: float | None
    model: str
    last_pruning: dict[str, Any] | None = None


class PruneRequest(BaseModel):
    """`POST /v1/conversations/{id}/prune`: summarise all but the last `keep_last` messages."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int = Field(default=4, ge=0, le=10_000)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_summary_tokens: int = Field(default=512, ge=16, le=8192)


class PruneJob(PruneRequest):
    """The input of a `prune` job."""

    conversation_id: EntityId


class PruneResult(BaseModel):
    """The result of a `prune` job."""

    conversation_id: str
    messages_pruned: int
    messages_kept: int
    tokens_before: int
    tokens_after: int
    summary: str | None
    model: str


class MessageReply(BaseModel):
    """The non-streaming answer of `POST /v1/conversations/{id}/messages`."""

    conversation_id: str
    job_id: str
    message: dict[str, Any]
    finish_reason: str
    usage: dict[str, int]


ConversationSort = Literal["created_at", "updated_at"]
