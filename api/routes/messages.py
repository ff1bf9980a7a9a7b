"""`POST /v1/messages`: the Anthropic Messages API over a chat job.

The body is validated as Anthropic's, translated into the internal OpenAI body (so any
provider can answer), run as a `chat` job, and rendered back in Anthropic's format,
streamed or whole. Errors use Anthropic's shape (api/errors.py picks it by path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import parse
from api.chat_jobs import ChatJob, failure_of, prelude, replay, start_chat_job
from api.context import services
from api.errors import error_body, job_error_headers, job_error_status
from api.formats import anthropic as fmt
from api.openapi import doc
from api.sse import SSE_HEADERS
from pipelines.tokens import count_message_tokens
from pipelines.translate import anthropic_request_to_openai
from schemas.anthropic import MessagesRequest
from schemas.jobs import Event
from schemas.openai import ChatCompletionRequest


@doc("Anthropic Messages (streamed as Messages SSE events, or whole)", body=MessagesRequest,
     streams=True, tags=["inference"])
async def create_message(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, MessagesRequest, svc.settings.max_json_body_bytes)
    openai_body = anthropic_request_to_openai(body.model_dump(exclude_none=True))
    job_input = ChatCompletionRequest.model_validate(openai_body).job_input()
    job = await start_chat_job(request, job_input)
    msg_id = fmt.message_id(job.job_id)
    if not body.stream:
        return await _whole(job, msg_id, body.model)
    try:
        seen = await prelude(job.events)
    except BaseException:
        job.cancel_in_background()
        raise
    if not seen:
        job.cancel_in_background()
        return _error(504, "UPSTREAM_TIMEOUT", "The message did not start in time.")
    if (error := failure_of(seen)) is not None:
        return _job_error(error)
    input_tokens = count_message_tokens(job_input["messages"], body.model)
    writer = fmt.MessageStreamWriter(msg_id, body.model, input_tokens)
    frames = _stream(job, replay(seen, job.events), writer)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


async def _whole(job: ChatJob, msg_id: str, model: str) -> Response:
    terminal: Event | None = None
    try:
        async for event in job.events:
            if event is not None and event.terminal:
                terminal = event
    finally:
        if terminal is None:
            job.cancel_in_background()
    if terminal is None:
        return _error(504, "UPSTREAM_TIMEOUT", "The message did not finish in time.")
    if terminal.type == "succeeded":
        return Response(orjson.dumps(fmt.message(msg_id, model, terminal.data["result"])),
                        media_type="application/json")
    return _job_error(terminal.data.get("error") or {"code": "CANCELLED",
                                                     "message": "Cancelled."})


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body("anthropic", status, code, message)),
                    status_code=status, media_type="application/json", headers=headers)


def _job_error(error: dict[str, Any]) -> Response:
    return _error(job_error_status(error), error["code"], error["message"],
                  headers=job_error_headers(error))


async def _stream(job: ChatJob, events: AsyncIterator[Event | None],
                  writer: fmt.MessageStreamWriter) -> AsyncIterator[bytes]:
    finished = False
    try:
        yield writer.start()
        async for event in events:
            if event is None:
                yield fmt.PING_FRAME
            elif event.type == "delta":
                yield writer.delta(event.data)
            elif event.type == "retry" and writer.sent_content:
                # Splicing a second attempt onto text already sent would corrupt it.
                finished = True
                yield fmt.error_frame(error_body(
                    "anthropic", 502, "UPSTREAM_ERROR",
                    "The message was interrupted and is being retried; request it again."))
                return
            elif event.terminal:
                finished = True
                if event.type == "succeeded":
                    yield writer.finish(event.data["result"])
                else:
                    error = event.data.get("error") or {"code": "CANCELLED",
                                                         "message": "The request was cancelled."}
                    yield fmt.error_frame(error_body("anthropic", job_error_status(error),
                                                     error["code"], error["message"]))
                return
    finally:
        if not finished:
            job.cancel_in_background()


routes = [Route("/v1/messages", create_message, methods=["POST"])]
