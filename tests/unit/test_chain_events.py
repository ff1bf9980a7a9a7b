"""The chain run writer: AI Studio's `data: {"type": …}` frames, only the run's own events,
and always an `execution_complete` or `execution_failed` at the end."""

from __future__ import annotations

from typing import Any

import orjson

from api.formats.chain_events import ChainEventWriter
from schemas.jobs import Event


def event(type_: str, data: dict[str, Any], seq: int = 1) -> Event:
    return Event(id=f"1700000000000-{seq}", job_id="run", seq=seq, type=type_, data=data)


def parse(frame: bytes | None) -> tuple[str, str, dict[str, Any]]:
    assert frame is not None
    lines = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
    return lines["id"], lines["event"], orjson.loads(lines["data"])


def test_run_events_become_frames_with_id_event_and_typed_data() -> None:
    writer = ChainEventWriter()
    frame = writer.event(event("prompt_chunk", {"promptId": 2, "content": "hi"}, 7))
    assert parse(frame) == ("1700000000000-7", "prompt_chunk",
                            {"type": "prompt_chunk", "promptId": 2, "content": "hi"})


def test_job_lifecycle_events_are_not_sent() -> None:
    writer = ChainEventWriter()
    for type_ in ("queued", "started", "retry", "progress"):
        assert writer.event(event(type_, {})) is None


def test_success_after_execution_complete_sends_nothing_more() -> None:
    writer = ChainEventWriter()
    writer.event(event("execution_complete", {"results": []}))
    assert writer.terminal(event("succeeded", {"result": {"results": []}})) is None


def test_a_cancelled_run_ends_with_execution_failed_made_from_the_cancel() -> None:
    writer = ChainEventWriter()
    writer.event(event("execution_started", {"executionId": "run", "totalPrompts": 2}))
    _, kind, data = parse(writer.terminal(event("cancelled", {"reason": "requested"}, 9)))
    assert kind == "execution_failed"
    assert data["error"]["code"] == "CANCELLED" and data["recoverable"] is True
    assert data["promptId"] is None


def test_a_resumed_run_replayed_from_its_start_reports_its_own_end() -> None:
    writer = ChainEventWriter()
    writer.event(event("execution_failed", {"error": {"code": "X"}, "promptId": 1,
                                            "recoverable": True}, 1))
    writer.event(event("execution_started", {"executionId": "run", "totalPrompts": 1}, 2))
    _, kind, data = parse(writer.terminal(event("succeeded", {"result": {
        "results": [{"promptId": 1, "output": "o"}]}}, 3)))
    assert kind == "execution_complete" and data["results"][0]["output"] == "o"
