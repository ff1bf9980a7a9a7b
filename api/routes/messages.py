"""`POST /v1/messages`: the Anthropic Messages API over a chat job.

The body is validated as Anthropic's, translated into the internal OpenAI body (so any
provider can answer), run as a `chat` job, and rendered back in Anthropic's format,
streamed or whole. Errors use Anthropic's shape (api/errors.py picks it by path).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import parse
from api.chat_jobs import (
    ChatJob,
    error_response,
    failure_of,
    prelude,
    relay,
    replay,
    start_chat_job,
)
from api.context import services
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
        return error_response("anthropic", {"code": "UPSTREAM_TIMEOUT", "status": 504,
            "message": "The message did not start in time."})
    if (error := failure_of(seen)) is not None:
        return error_response("anthropic", error)
    input_tokens = count_message_tokens(job_input["messages"], body.model)
    writer = fmt.MessageStreamWriter(msg_id, body.model, input_tokens)
    frames = relay(job, replay(seen, job.events), writer, wire="anthropic",
                   opening=writer.start(), keepalive=fmt.PING_FRAME,
                   error_frame=fmt.error_frame)
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
        return error_response("anthropic", {"code": "UPSTREAM_TIMEOUT", "status": 504,
            "message": "The message did not finish in time."})
    if terminal.type == "succeeded":
        return Response(orjson.dumps(fmt.message(msg_id, model, terminal.data["result"])),
                        media_type="application/json")
    return error_response("anthropic", terminal.data.get("error")
                          or {"code": "CANCELLED", "message": "Cancelled."})


routes = [Route("/v1/messages", create_message, methods=["POST"])]
