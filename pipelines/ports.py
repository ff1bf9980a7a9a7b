"""The seams between pipelines and the outside world, as Protocols.

Pipelines depend on these, never on a concrete provider, broker or web framework, so
unit tests can hand in fakes and workers can hand in real clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of one streamed tool call; `index` ties fragments together."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ChatChunk:
    """One step of a streamed completion: text, reasoning (a thinking model's
    `reasoning_content` or Anthropic `thinking`), tool-call fragments, or the end."""

    text: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str = ""


class ChatModel(Protocol):
    """A provider bound to one upstream model.

    `request` is an OpenAI Chat Completions body (a dict): the one internal format every
    front format is translated into. Implementations yield chunks as they arrive and end
    with a chunk that carries `finish_reason` (and `usage` where the upstream gives it).
    Async, so one worker process holds hundreds of streams on one event loop; closing the
    iterator (`aclose`) must close the upstream stream.
    """

    def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]: ...


class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension."""

    model: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class Emit(Protocol):
    """Publishes one event of a job; returns True when the job has been cancelled."""

    async def __call__(self, type_: str, data: dict[str, Any], /) -> bool: ...
