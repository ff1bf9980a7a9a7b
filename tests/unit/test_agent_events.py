"""The agent turn's SSE writer: only turn events go out, and every stream ends in one of
turn.completed, requires_action, approval_required or turn.failed."""

from __future__ import annotations

import json
from typing import Any

from api.formats.agent_events import AgentEventWriter
from schemas.jobs import Event


def _event(type_: str, data: dict[str, Any], seq: int = 1) -> Event:
    return Event(id=f"1-{seq}", job_id="j", seq=seq, type=type_, data=data)


def _parse(frame: bytes | None) -> tuple[str, str, dict[str, Any]]:
    assert frame is not None
    lines = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
    return lines["id"], lines["event"], json.loads(lines["data"])


def test_turn_events_pass_with_their_type_and_lifecycle_events_do_not() -> None:
    writer = AgentEventWriter()
    assert writer.event(_event("started", {"attempt": 1})) is None
    assert writer.event(_event("retry", {"attempt": 2})) is None
    event_id, type_, data = _parse(writer.event(_event(
        "tool_call", {"id": "c1", "name": "calculator", "arguments": "{}"}, seq=7)))
    assert (event_id, type_) == ("1-7", "tool_call")
    assert data == {"type": "tool_call", "id": "c1", "name": "calculator", "arguments": "{}"}


def test_a_turn_that_ended_itself_gets_no_second_end() -> None:
    writer = AgentEventWriter()
    writer.event(_event("turn.completed", {"usage": {}, "stop_reason": "stop"}))
    assert writer.terminal(_event("succeeded", {"result": {"status": "completed"}})) is None


def test_an_end_is_made_from_the_jobs_result_when_the_turn_event_was_lost() -> None:
    waiting = [{"id": "c1", "name": "get_weather", "arguments": "{}"}]
    result = {"status": "requires_action", "required_action": {"type": "tool_calls",
                                                                "tool_calls": waiting}}
    _, type_, data = _parse(AgentEventWriter().terminal(_event("succeeded", {"result": result})))
    assert type_ == "requires_action" and data["tool_calls"] == waiting
    approval = {**result, "status": "requires_approval"}
    _, type_, _ = _parse(AgentEventWriter().terminal(_event("succeeded", {"result": approval})))
    assert type_ == "approval_required"
    done = {"status": "completed", "usage": {"total_tokens": 3}, "stop_reason": "max_steps",
            "output": ""}
    _, type_, data = _parse(AgentEventWriter().terminal(_event("succeeded", {"result": done})))
    assert type_ == "turn.completed" and data["stop_reason"] == "max_steps"


def test_a_failed_or_cancelled_job_ends_the_stream_with_turn_failed() -> None:
    failed = _event("failed", {"error": {"code": "TIMEOUT", "message": "too slow"}})
    _, type_, data = _parse(AgentEventWriter().terminal(failed))
    assert type_ == "turn.failed"
    assert data["error"] == {"code": "TIMEOUT", "message": "too slow", "status": 504}
    _, type_, data = _parse(AgentEventWriter().terminal(_event("cancelled", {"reason": "x"})))
    assert type_ == "turn.failed" and data["error"]["code"] == "CANCELLED"
