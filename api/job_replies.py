"""Answering an own-format route from a job: wait for its end, or relay its events as SSE.

Own routes (conversations, compare) stream named events (`event: text-delta`, `data: {...}`)
rather than the raw job log, so clients need not know the job event schema. The job id is
in the `X-Job-ID` header, so a client that loses the stream can still read the result.
Hanging up does not cancel the job: its result (and a conversation's reply) is kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.context import Services
from api.errors import error_response, job_error_status
from api.sse import KEEPALIVE_FRAME, SSE_HEADERS
from api.streams import follow
from schemas.jobs import Event

Render = Callable[[Event], Iterable[bytes]]


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(data))


def job_error(event: Event | None) -> dict[str, Any]:
    """`{code, message, status}` of a job that failed, was cancelled, or did not end in time."""
    if event is None:
        return {"code": "UPSTREAM_TIMEOUT", "message": "The job did not finish in time.",
                "status": 504}
    error = dict(event.data.get("error") or {"code": "CANCELLED",
                                              "message": "The job was cancelled."})
    error["status"] = job_error_status(error)
    return error


async def wait_for_end(svc: Services, job_id: str) -> Event | None:
    """The job's terminal event, or None if it did not come within the chat timeout."""
    async for event in follow(svc.hub, svc.events, job_id,
                              keepalive_s=svc.settings.sse_keepalive_s,
                              max_lifetime_s=svc.settings.chat_timeout_s):
        if event is not None and event.terminal:
            return event
    return None


def failure_response(request: Request, event: Event | None, job_id: str) -> Response:
    error = job_error(event)
    return error_response(request.url.path, error["status"], str(error["code"]),
                          str(error["message"]), details={"job_id": job_id},
                          request_id=request.scope.get("state", {}).get("request_id"),
                          headers={"X-Job-ID": job_id})


def json_response(body: Any, job_id: str, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"X-Job-ID": job_id})


def relay(svc: Services, job_id: str, render: Render) -> StreamingResponse:
    """SSE of `render(event)` for each job event, ending with the job; failures as `error`."""
    return StreamingResponse(_frames(svc, job_id, render), media_type="text/event-stream",
                             headers={**SSE_HEADERS, "X-Job-ID": job_id})


async def _frames(svc: Services, job_id: str, render: Render) -> AsyncIterator[bytes]:
    # An immediate comment flushes headers through proxies before the first event.
    yield KEEPALIVE_FRAME
    streamed = False
    async for event in follow(svc.hub, svc.events, job_id,
                              keepalive_s=svc.settings.sse_keepalive_s,
                              max_lifetime_s=svc.settings.chat_timeout_s):
        if event is None:
            yield KEEPALIVE_FRAME
            continue
        if event.type == "retry" and streamed:
            # The first attempt's text is already on the wire; a second attempt spliced
            # onto it would corrupt the answer. The job's result stays readable by id.
            yield sse_frame("error", {
                "code": "UPSTREAM_ERROR", "status": 502, "job_id": job_id,
                "message": "The answer was interrupted and is being retried; read the "
                           "job's result instead."})
            return
        if event.type in ("failed", "cancelled"):
            yield sse_frame("error", {**job_error(event), "job_id": job_id})
            return
        for frame in render(event):
            streamed = streamed or event.type == "delta"
            yield frame
        if event.terminal:
            return
    yield sse_frame("error", {**job_error(None), "job_id": job_id})
