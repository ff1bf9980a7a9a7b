"""`POST /v1/chat/completions`: a chat job, answered in OpenAI's format (streamed or whole)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import parse
from api.context import Services, principal, services
from api.errors import error_body, job_error_status
from api.formats import openai as fmt
from api.job_control import cancel_job, submit_job
from api.sse import SSE_HEADERS
from api.streams import follow
from pipelines.models import get_model
from schemas.jobs import Event
from schemas.openai import ChatCompletionRequest

# Cancellations started by disconnecting clients; kept so they are not garbage-collected.
_background: set[asyncio.Task[None]] = set()


async def chat_completions(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, ChatCompletionRequest, svc.settings.max_json_body_bytes)
    get_model(body.model)
    owner_id = principal(request).owner_id
    row, _ = await submit_job(svc, kind="chat", owner_id=owner_id, input=body.job_input())
    job_id = str(row.id)
    completion_id = "chatcmpl-" + job_id.replace("-", "")
    created = int(time.time())
    events = follow(svc.hub, svc.events, job_id, keepalive_s=svc.settings.sse_keepalive_s,
                    max_lifetime_s=svc.settings.chat_timeout_s)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = fmt.ChunkWriter(completion_id, body.model, created, include_usage)
        frames = _stream(svc, events, writer, job_id, owner_id)
        return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(svc, events, completion_id, created, job_id, owner_id)


async def _whole(svc: Services, events: AsyncIterator[Event | None], completion_id: str,
                 created: int, job_id: str, owner_id: str) -> Response:
    terminal: Event | None = None
    try:
        async for event in events:
            if event is not None and event.terminal:
                terminal = event
    finally:
        if terminal is None:
            _cancel_in_background(svc, job_id, owner_id)
    if terminal is None:
        return _error(504, "UPSTREAM_TIMEOUT", "The completion did not finish in time.")
    if terminal.type == "succeeded":
        body = fmt.completion(completion_id, created, terminal.data["result"])
        return Response(orjson.dumps(body), media_type="application/json")
    error = terminal.data.get("error") or {"code": "CANCELLED", "message": "Cancelled."}
    return _error(job_error_status(error), error["code"], error["message"])


def _error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps(error_body("openai", status, code, message)),
                    status_code=status, media_type="application/json")


async def _stream(svc: Services, events: AsyncIterator[Event | None], writer: fmt.ChunkWriter,
                  job_id: str, owner_id: str) -> AsyncIterator[bytes]:
    finished = False
    try:
        yield writer.role()
        async for event in events:
            if event is None:
                yield b": keep-alive\n\n"
            elif event.type == "delta":
                yield writer.delta(event.data)
            elif event.type == "retry" and writer.sent_content:
                # The first attempt's text is already on the wire; splicing a second attempt
                # onto it would corrupt the answer, so end with an error instead.
                finished = True
                yield fmt.error_frame(error_body(
                    "openai", 502, "UPSTREAM_ERROR",
                    "The completion was interrupted and is being retried; request it again."))
                return
            elif event.terminal:
                finished = True
                if event.type == "succeeded":
                    yield writer.finish(event.data["result"])
                else:
                    error = event.data.get("error") or {"code": "CANCELLED",
                                                         "message": "The request was cancelled."}
                    yield fmt.error_frame(error_body("openai", job_error_status(error),
                                                     error["code"], error["message"]))
                return
    finally:
        if not finished:
            # Nobody is left to read this completion: stop the worker.
            _cancel_in_background(svc, job_id, owner_id)


def _cancel_in_background(svc: Services, job_id: str, owner_id: str) -> None:
    task = asyncio.get_running_loop().create_task(
        cancel_job(svc, job_id, owner_id, "client disconnected"))
    _background.add(task)
    task.add_done_callback(_background.discard)


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
