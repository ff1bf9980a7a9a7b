"""`POST /v1/chat/completions`: a chat job, answered in OpenAI's format (streamed or whole)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import parse
from api.chat_jobs import ChatJob, failure_of, prelude, replay, start_chat_job
from api.context import services
from api.conversation_turns import with_conversation
from api.errors import error_body, job_error_headers, job_error_status
from api.formats import openai as fmt
from api.openapi import doc
from api.sse import SSE_HEADERS
from schemas.jobs import Event
from schemas.openai import ChatCompletionRequest


@doc("OpenAI Chat Completions (streamed as chat.completion.chunk SSE, or whole)",
     body=ChatCompletionRequest, streams=True, tags=["inference"])
async def chat_completions(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, ChatCompletionRequest, svc.settings.max_json_body_bytes)
    job_input, on_submit = await with_conversation(request, body.job_input())
    job = await start_chat_job(request, job_input, on_submit)
    completion_id = "chatcmpl-" + job.job_id.replace("-", "")
    created = int(time.time())
    if not body.stream:
        return await _whole(job, completion_id, created)
    try:
        seen = await prelude(job.events)
    except BaseException:
        job.cancel_in_background()
        raise
    if not seen:
        job.cancel_in_background()
        return _error(504, "UPSTREAM_TIMEOUT", "The completion did not start in time.")
    if (error := failure_of(seen)) is not None:
        return _job_error(error)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = fmt.ChunkWriter(completion_id, body.model, created, include_usage)
    frames = _stream(job, replay(seen, job.events), writer)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


async def _whole(job: ChatJob, completion_id: str, created: int) -> Response:
    terminal: Event | None = None
    try:
        async for event in job.events:
            if event is not None and event.terminal:
                terminal = event
    finally:
        if terminal is None:
            job.cancel_in_background()
    if terminal is None:
        return _error(504, "UPSTREAM_TIMEOUT", "The completion did not finish in time.")
    if terminal.type == "succeeded":
        body = fmt.completion(completion_id, created, terminal.data["result"])
        return Response(orjson.dumps(body), media_type="application/json")
    return _job_error(terminal.data.get("error") or {"code": "CANCELLED",
                                                     "message": "Cancelled."})


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body("openai", status, code, message)),
                    status_code=status, media_type="application/json", headers=headers)


def _job_error(error: dict[str, Any]) -> Response:
    return _error(job_error_status(error), error["code"], error["message"],
                  headers=job_error_headers(error))


async def _stream(job: ChatJob, events: AsyncIterator[Event | None],
                  writer: fmt.ChunkWriter) -> AsyncIterator[bytes]:
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
            job.cancel_in_background()


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
