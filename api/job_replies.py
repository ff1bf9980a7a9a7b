"""Answering a route from a job it submits: open the job's `JobStream`, then answer.

- `streamed_answer`: SSE whose HTTP status is decided by the stream's first decisive item,
  so a chat job that fails before any output (bad upstream key, upstream rate limit,
  timeout) is answered with that failure's status and headers and SDKs raise the right
  exception; once output or a keep-alive was sent, errors travel inside the stream.
- `event_stream`: SSE that starts at once with 200 (own-format replies).
- `whole_answer`: JSON once the job ends.

Errors use the route's wire format (api/errors.py picks it by path). Every answer
carries `X-Job-ID`, so a client that loses it can still read the job; answers whose
stream was given the request's start time carry `X-Switchyard-Overhead-Ms`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.context import Services, principal, services
from api.errors import error_body, job_error_headers, job_error_status, wire_format
from api.formats.sse import SSE_HEADERS
from api.formats.writer import Writer
from api.job_control import OnSubmit, cancel_job, submit_job
from api.job_stream import TIMED_OUT, JobStream, Tick
from pipelines import metrics
from pipelines.db.jobs import new_job_id
from schemas.events import JobFailure, failure_of
from schemas.jobs import Event

OVERHEAD_HEADER = "X-Switchyard-Overhead-Ms"
# nginx's "client closed request": what a hung-up client is answered (nobody reads it).
_CLIENT_GONE_STATUS = 499

# Cancellations of abandoned jobs; kept so they are not garbage-collected while running.
_background: set[asyncio.Task[Any]] = set()


async def open_job(conn: HTTPConnection, *, kind: str, input: dict[str, Any],
                   cancel_on_disconnect: bool, on_submit: OnSubmit | None = None,
                   started_at: float | None = None) -> JobStream:
    """Submit a job for the caller, its stream already listening.

    With `cancel_on_disconnect`, a stream closed before the job ended (the client left,
    time ran out, the answer was interrupted) cancels the job: nobody is left to read it.
    Without, the job runs on and its result stays readable by id.
    """
    svc = services(conn)
    who = principal(conn)
    job_id = new_job_id()

    async def submit() -> None:
        await submit_job(svc, kind=kind, owner_id=who.owner_id, input=input,
                         key_id=who.key_id, on_submit=on_submit, job_id=job_id)

    stream = await JobStream.submit(
        svc.hub, svc.events, job_id, submit, keepalive_s=svc.settings.sse_keepalive_s,
        lifetime_s=svc.settings.chat_timeout_s, started_at=started_at,
        on_abandon=_canceller(svc, job_id, who.owner_id) if cancel_on_disconnect else None)
    if isinstance(conn, Request):
        stream.watch_disconnect(conn.receive)
    return stream


async def open_chat(conn: HTTPConnection, job_input: dict[str, Any], *, streamed: bool,
                    cancel_on_disconnect: bool, on_submit: OnSubmit | None = None,
                    started_at: float | None = None) -> JobStream:
    """A `chat` job on an enabled model; `streamed` false tells the worker to publish no
    per-token deltas, since the client waits for the whole answer."""
    await services(conn).models.resolve(job_input["model"])
    return await open_job(conn, kind="chat", input={**job_input, "stream": streamed},
                          cancel_on_disconnect=cancel_on_disconnect, on_submit=on_submit,
                          started_at=started_at)


def _canceller(svc: Services, job_id: str, owner_id: str) -> Callable[[str], None]:
    def cancel(reason: str) -> None:
        # Not awaited: the stream may be closing because its own task is being cancelled.
        task = asyncio.get_running_loop().create_task(
            cancel_job(svc, job_id, owner_id, reason))
        _background.add(task)
        task.add_done_callback(_background.discard)

    return cancel


class SseResponse(StreamingResponse):
    """SSE of `frames` that calls `close` however the response ends, even when the body
    was never started (an unstarted generator runs no cleanup of its own), and counts itself
    in switchyard_streams_open while it is open (once per stream, not per frame)."""

    def __init__(self, frames: AsyncIterator[bytes], close: Callable[[], Awaitable[None]],
                 headers: dict[str, str]) -> None:
        super().__init__(frames, media_type="text/event-stream",
                         headers={**SSE_HEADERS, **headers})
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gauge = metrics.streams_open("sse")
        gauge.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            gauge.dec()
            await self._close()


class StreamResponse(SseResponse):
    """SSE of a job stream's frames, written by `writer`; closes the stream at the end."""

    def __init__(self, stream: JobStream, writer: Writer[bytes],
                 headers: dict[str, str]) -> None:
        super().__init__(stream.frames(writer), stream.close, headers)


async def streamed_answer(request: Request, stream: JobStream,
                          writer: Writer[bytes]) -> Response:
    """SSE with the status of the stream's first decisive item (see module docstring)."""
    try:
        first = await stream.opening()
    except BaseException:
        await stream.close()
        raise
    failure: JobFailure | None = None
    if first is Tick.CLIENT_GONE:
        await stream.close()
        return Response(status_code=_CLIENT_GONE_STATUS)
    if first is Tick.EXPIRED:
        failure = TIMED_OUT
    elif isinstance(first, Event) and first.terminal and first.type != "succeeded":
        failure = failure_of(first)
    if failure is not None:
        await stream.close()
        return failure_response(request, stream.job_id, failure)
    return StreamResponse(stream, writer, _answer_headers(stream))


def event_stream(stream: JobStream, writer: Writer[bytes]) -> Response:
    """SSE that starts at once (200); failures travel inside the stream."""
    return StreamResponse(stream, writer, {"X-Job-ID": stream.job_id})


async def whole_answer(request: Request, stream: JobStream,
                       answer: Callable[[Any], Any]) -> Response:
    """`answer(result)` as JSON once the job succeeds, or its failure in the route's format."""
    end = await stream.outcome()
    if end is Tick.CLIENT_GONE:
        return Response(status_code=_CLIENT_GONE_STATUS)
    if isinstance(end, Tick):
        failure = TIMED_OUT
    elif end.type == "succeeded":
        return Response(orjson.dumps(answer(end.data["result"])), media_type="application/json",
                        headers=_answer_headers(stream))
    else:
        failure = failure_of(end)
    return failure_response(request, stream.job_id, failure)


def failure_response(conn: HTTPConnection, job_id: str, failure: JobFailure) -> Response:
    """A job's `{code, message, status?, retry_after_s?}` failure as the route's error."""
    status = job_error_status(failure)
    body = error_body(wire_format(conn.url.path), status, failure["code"], failure["message"],
                      details={"job_id": job_id},
                      request_id=conn.scope.get("state", {}).get("request_id"))
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={**job_error_headers(failure), "X-Job-ID": job_id})


def _answer_headers(stream: JobStream) -> dict[str, str]:
    headers = {"X-Job-ID": stream.job_id}
    if stream.overhead_ms is not None:
        headers[OVERHEAD_HEADER] = f"{stream.overhead_ms:.1f}"
    return headers
