"""The payloads of job events (`Event.data`), as workers publish them and the API reads them.

TypedDicts, not pydantic models: an API process relays thousands of events a second and
validating each would cost more than the rest of the hot path. They type the fields the
API reads (`delta(event)` and friends are casts, free at runtime) and document the
contract between workers and the edge:

- `queued {kind}`, `started {attempt}`, `retry {attempt}` (drop partial output: a new
  attempt starts from scratch), `progress {progress}`, `step_started`/`step_completed`;
- `delta {text?, tool_calls?}`; the first delta of an attempt carries `upstream_ttft_ms`,
  compare tags deltas with `model` and `index`;
- terminal: `succeeded {result}` (a chat result carries `upstream_ms`), `failed {error}`,
  `cancelled {reason}`.

A chat job's input carries `stream`: false means the client wants a whole answer, so the
worker publishes no `delta` events; missing means true.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

from schemas.jobs import Event


class ToolCallDelta(TypedDict):
    """A piece of one tool call; `id` and `name` come with its first piece."""

    index: int
    id: NotRequired[str]
    name: NotRequired[str]
    arguments: NotRequired[str]


class DeltaData(TypedDict, total=False):
    text: str
    tool_calls: list[ToolCallDelta]
    # On the first delta of an attempt: how long the upstream took to its first token.
    upstream_ttft_ms: float
    # Compare jobs: which of the compared models this delta belongs to.
    model: str
    index: int


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResult(TypedDict, total=False):
    """The `result` of a succeeded chat job."""

    model: str
    content: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: Usage
    duration_ms: float
    ttft_ms: float | None
    # Time the worker spent waiting on the upstream model, for the overhead header.
    upstream_ms: float


class JobFailure(TypedDict):
    """The `error` of a failed job; `status` and `retry_after_s` come from the upstream."""

    code: str
    message: str
    status: NotRequired[int]
    retry_after_s: NotRequired[float]


class QueuedData(TypedDict):
    kind: str
    retry: NotRequired[bool]


class AttemptData(TypedDict):
    """`started` and `retry`."""

    attempt: int


class SucceededData(TypedDict):
    result: Any


class FailedData(TypedDict):
    error: JobFailure


class CancelledData(TypedDict):
    reason: str


CANCELLED: JobFailure = {"code": "CANCELLED", "message": "The job was cancelled.",
                         "status": 409}


def failure_of(event: Event) -> JobFailure:
    """The failure a `failed` or `cancelled` event ends a job with: the one place where a
    cancel becomes an error."""
    return CANCELLED if event.type == "cancelled" else failed(event)["error"]


def delta(event: Event) -> DeltaData:
    return cast(DeltaData, event.data)


def failed(event: Event) -> FailedData:
    return cast(FailedData, event.data)


def chat_result(event: Event) -> ChatResult:
    return cast(ChatResult, event.data["result"])
