"""An agent turn's stream: `event: <type>` and `data: {"type": <type>, …}` per event, with
`id:` (the job log's event id, for `Last-Event-ID`).

Only the turn's own events go out (`message.delta`, `reasoning.delta`, `tool_call`,
`tool_result`, `requires_action`, `approval_required`, `turn.completed`, `turn.failed`);
the job's lifecycle events do not. Every stream ends with one of the last four: a job that
ended without one (failed, cancelled, or its end published by a redelivery) gets one made
from its terminal event. Items are committed as they happen, so a `retry` (a redelivered
turn) does not end the stream: the turn carries on from its last committed item.
"""

from __future__ import annotations

from api.errors import job_error_status
from api.formats.sse import KEEPALIVE_FRAME, typed_frame
from schemas.events import JobFailure, failure_of
from schemas.jobs import Event

AGENT_EVENTS = frozenset({"message.delta", "reasoning.delta", "tool_call", "tool_result",
                          "requires_action", "approval_required", "turn.completed",
                          "turn.failed"})
_ENDS = frozenset({"requires_action", "approval_required", "turn.completed", "turn.failed"})


class AgentEventWriter:
    sent_content = False

    def __init__(self) -> None:
        self._ended = False

    def opening(self) -> bytes:
        return KEEPALIVE_FRAME

    def keepalive(self) -> bytes:
        return KEEPALIVE_FRAME

    def event(self, event: Event) -> bytes | None:
        if event.type not in AGENT_EVENTS:
            return None
        if event.type in _ENDS:
            self._ended = True
        return typed_frame(event.id, event.type, event.data)

    def terminal(self, event: Event) -> bytes | None:
        if self._ended:
            return None
        if event.type == "succeeded":
            result = event.data.get("result") or {}
            if result.get("status") in ("requires_action", "requires_approval"):
                waiting = (result.get("required_action") or {}).get("tool_calls") or []
                type_ = ("requires_action" if result["status"] == "requires_action"
                         else "approval_required")
                return typed_frame(event.id, type_, {"tool_calls": waiting})
            return typed_frame(event.id, "turn.completed", {
                "usage": result.get("usage"), "stop_reason": result.get("stop_reason"),
                "output": result.get("output")})
        return self.error(failure_of(event), event.id)

    def error(self, failure: JobFailure, event_id: str | None = None) -> bytes:
        return typed_frame(event_id, "turn.failed",
                           {"error": {**failure, "status": job_error_status(failure)}})
