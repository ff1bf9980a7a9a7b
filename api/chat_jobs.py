"""What every chat front format shares: submit a chat job, open its event stream, and
cancel it when the client goes away.

A stream's HTTP status is decided by its first event: a job that fails before any output
(unknown upstream key, upstream rate limit, timeout) is answered with that error's status
and headers, so SDKs raise the right exception; once output (or a keep-alive, for a slow
first token) has been sent, the status is 200 and errors travel inside the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from api.context import Services, principal, services
from api.errors import error_body, job_error_headers, job_error_status
from api.job_control import OnSubmit, cancel_job, submit_job
from api.streams import follow
from pipelines.models import ModelInfo
from schemas.jobs import Event

# Cancellations started by disconnecting clients; kept so they are not garbage-collected.
_background: set[asyncio.Task[Any]] = set()


@dataclass(slots=True)
class ChatJob:
    """A submitted chat job and the stream of its events."""

    svc: Services
    job_id: str
    owner_id: str
    model: ModelInfo
    events: AsyncIterator[Event | None]

    def cancel_in_background(self, reason: str = "client disconnected") -> None:
        """Stop the worker without waiting: nobody is left to read this job."""
        task = asyncio.get_running_loop().create_task(
            cancel_job(self.svc, self.job_id, self.owner_id, reason))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def start_chat_job(conn: HTTPConnection, job_input: dict[str, Any],
                         on_submit: OnSubmit | None = None) -> ChatJob:
    """Check the model, submit a `chat` job for the caller, and subscribe to its events.

    `on_submit` writes rows that belong with the job in its transaction (conversation turns).
    """
    svc = services(conn)
    model = await svc.models.resolve(job_input["model"])
    who = principal(conn)
    row, _ = await submit_job(svc, kind="chat", owner_id=who.owner_id, input=job_input,
                              key_id=who.key_id, on_submit=on_submit)
    job_id = str(row.id)
    events = follow(svc.hub, svc.events, job_id, keepalive_s=svc.settings.sse_keepalive_s,
                    max_lifetime_s=svc.settings.chat_timeout_s)
    return ChatJob(svc=svc, job_id=job_id, owner_id=who.owner_id, model=model, events=events)


async def prelude(events: AsyncIterator[Event | None]) -> list[Event | None]:
    """Events up to the first that decides the response: output, a terminal, or a keep-alive.

    An empty list means the stream ended (its lifetime ran out) before anything happened.
    """
    seen: list[Event | None] = []
    async for event in events:
        seen.append(event)
        if event is None or event.type == "delta" or event.terminal:
            break
    return seen


def failure_of(seen: list[Event | None]) -> dict[str, Any] | None:
    """The error of a job that ended without output, if the prelude shows one."""
    last = seen[-1] if seen else None
    if last is None or not last.terminal or last.type == "succeeded":
        return None
    return last.data.get("error") or {"code": "CANCELLED", "message": "The request was cancelled."}


async def replay(seen: list[Event | None],
                 events: AsyncIterator[Event | None]) -> AsyncIterator[Event | None]:
    """The prelude's events again, then the rest of the stream."""
    for event in seen:
        yield event
    if seen and seen[-1] is not None and seen[-1].terminal:
        return
    async for event in events:
        yield event


class FrameWriter(Protocol):
    """Renders a chat job's events in one wire format (OpenAI chunks, Anthropic events)."""

    sent_content: bool

    def delta(self, data: dict[str, Any]) -> bytes: ...

    def finish(self, result: dict[str, Any]) -> bytes: ...


async def relay(job: ChatJob, events: AsyncIterator[Event | None], writer: FrameWriter, *,
                wire: str, opening: bytes, keepalive: bytes,
                error_frame: Callable[[dict[str, Any]], bytes]) -> AsyncIterator[bytes]:
    """A chat job's events as frames of `wire` format, ending with its finish or an error.

    If the client goes away before the end, the job is cancelled: nobody is left to read it.
    """
    finished = False
    try:
        yield opening
        async for event in events:
            if event is None:
                yield keepalive
            elif event.type == "delta":
                yield writer.delta(event.data)
            elif event.type == "retry" and writer.sent_content:
                # The first attempt's text is already on the wire; splicing a second attempt
                # onto it would corrupt the answer, so end with an error instead.
                finished = True
                yield error_frame(error_body(
                    wire, 502, "UPSTREAM_ERROR",
                    "The answer was interrupted and is being retried; request it again."))
                return
            elif event.terminal:
                finished = True
                if event.type == "succeeded":
                    yield writer.finish(event.data["result"])
                else:
                    error = event.data.get("error") or {"code": "CANCELLED",
                                                         "message": "The request was cancelled."}
                    yield error_frame(error_body(wire, job_error_status(error), error["code"],
                                                 error["message"]))
                return
    finally:
        if not finished:
            job.cancel_in_background()


def error_response(wire: str, error: dict[str, Any]) -> Response:
    """A failed job's `{code, message, status?, retry_after_s?}` as a `wire`-format response."""
    status = job_error_status(error)
    return Response(orjson.dumps(error_body(wire, status, error["code"], error["message"])),
                    status_code=status, media_type="application/json",
                    headers=job_error_headers(error))


async def opening(job: ChatJob) -> list[Event | None]:
    """The prelude of a streamed answer; the job is cancelled if the client or time runs out."""
    try:
        seen = await prelude(job.events)
    except BaseException:
        job.cancel_in_background()
        raise
    if not seen:
        job.cancel_in_background()
    return seen


async def last_event(job: ChatJob) -> Event | None:
    """The terminal event of a whole (non-streamed) answer, or None if time ran out first."""
    terminal: Event | None = None
    try:
        async for event in job.events:
            if event is not None and event.terminal:
                terminal = event
    finally:
        if terminal is None:
            job.cancel_in_background()
    return terminal


def failure_response(wire: str, terminal: Event | None, what: str) -> Response:
    """The error answer for a job that did not succeed (None: it did not finish in time)."""
    if terminal is None:
        return error_response(wire, {"code": "UPSTREAM_TIMEOUT", "status": 504,
                                     "message": f"The {what} did not finish in time."})
    return error_response(wire, terminal.data.get("error")
                          or {"code": "CANCELLED", "message": "Cancelled."})


def not_started_response(wire: str, what: str) -> Response:
    return error_response(wire, {"code": "UPSTREAM_TIMEOUT", "status": 504,
                                 "message": f"The {what} did not start in time."})
