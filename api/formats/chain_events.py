"""A chain run's stream in AI Studio's shape: `data: {"type": "prompt_chunk", …}` per event.

Each frame also carries `id:` (the run log's event id, for `Last-Event-ID`) and `event:` (the
type), which AI Studio's clients ignore. Only the run's own events are sent; the job's
`queued`/`started`/`retry` are not. The run always ends in `execution_complete` or
`execution_failed`: a job that ended without one (cancelled, or failed before its first
step) gets one made from its terminal event, and so does a stream that outlived its time.
"""

from __future__ import annotations

from api.errors import job_error_status
from api.formats.sse import KEEPALIVE_FRAME, typed_frame
from schemas.events import JobFailure, failure_of
from schemas.jobs import Event

CHAIN_EVENTS = frozenset({"execution_started", "prompt_started", "prompt_chunk",
                          "prompt_complete", "execution_complete", "execution_failed"})


class ChainEventWriter:
    """Renders a run's log; never reports answer content, so a `retry` (a resumed or
    redelivered run) does not end the stream: `prompt_started` tells clients what to drop."""

    sent_content = False

    def __init__(self) -> None:
        self._ended = False

    def opening(self) -> bytes:
        return KEEPALIVE_FRAME

    def keepalive(self) -> bytes:
        return KEEPALIVE_FRAME

    def event(self, event: Event) -> bytes | None:
        if event.type not in CHAIN_EVENTS:
            return None
        if event.type == "execution_started":
            self._ended = False  # a later attempt of a run replayed from its start
        elif event.type in ("execution_complete", "execution_failed"):
            self._ended = True
        return typed_frame(event.id, event.type, event.data)

    def terminal(self, event: Event) -> bytes | None:
        if self._ended:
            return None
        if event.type == "succeeded":
            result = event.data.get("result") or {}
            return typed_frame(event.id, "execution_complete",
                               {"results": result.get("results", [])})
        failure = failure_of(event)
        return typed_frame(event.id, "execution_failed", {
            "error": {**failure, "status": job_error_status(failure)}, "promptId": None,
            "recoverable": True})

    def error(self, failure: JobFailure) -> bytes:
        return typed_frame(None, "execution_failed", {
            "error": {**failure, "status": job_error_status(failure)}, "promptId": None,
            "recoverable": True})
