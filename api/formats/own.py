"""Switchyard's own named SSE events, for routes that answer from a job in their own shape
(conversations, compare, knowledge ask): `event: text-delta` / `data: {...}` rather than
the raw job log, so clients need not know the job event schema.

Each route gives what it sends per event (`render`) and the body of its answer
(`answer(result)`): the whole answer is that body, a streamed one ends with it as
`finish`. A failure ends the stream as `error` with the job id, whose result stays
readable (hanging up does not cancel these jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from api.errors import job_error_status
from api.formats.sse import KEEPALIVE_FRAME
from api.formats.writer import AnswerWriter
from schemas.events import JobFailure
from schemas.jobs import Event

Render = Callable[[Event], bytes | None]
Answer = Callable[[Any], Any]


def sse_frame(event: str, data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(data))


def text_delta(event: Event) -> bytes | None:
    """A delta's text as `text-delta`, what a one-answer route streams."""
    if event.type == "delta" and (text := event.data.get("text")):
        return sse_frame("text-delta", {"text": text})
    return None


class NamedEventWriter(AnswerWriter[bytes]):
    def __init__(self, job_id: str, render: Render, answer: Answer) -> None:
        self._job_id = job_id
        self._render = render
        self._answer = answer

    def opening(self) -> bytes:
        # An immediate comment flushes headers through proxies before the first event.
        return KEEPALIVE_FRAME

    def keepalive(self) -> bytes:
        return KEEPALIVE_FRAME

    def event(self, event: Event) -> bytes | None:
        frame = self._render(event)
        if frame is not None and event.type == "delta":
            self.sent_content = True
        return frame

    def finish(self, result: Any) -> bytes:
        return sse_frame("finish", self._answer(result))

    def error(self, failure: JobFailure) -> bytes:
        return sse_frame("error", {**failure, "status": job_error_status(failure),
                                   "job_id": self._job_id})
