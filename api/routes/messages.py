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
    failure_response,
    last_event,
    not_started_response,
    opening,
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
    seen = await opening(job)
    if not seen:
        return not_started_response("anthropic", "message")
    if (error := failure_of(seen)) is not None:
        return error_response("anthropic", error)
    input_tokens = count_message_tokens(job_input["messages"], body.model)
    writer = fmt.MessageStreamWriter(msg_id, body.model, input_tokens)
    frames = relay(job, replay(seen, job.events), writer, wire="anthropic",
                   opening=writer.start(), keepalive=fmt.PING_FRAME,
                   error_frame=fmt.error_frame)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


async def _whole(job: ChatJob, msg_id: str, model: str) -> Response:
    terminal = await last_event(job)
    if terminal is None or terminal.type != "succeeded":
        return failure_response("anthropic", terminal, "message")
    return Response(orjson.dumps(fmt.message(msg_id, model, terminal.data["result"])),
                    media_type="application/json")


routes = [Route("/v1/messages", create_message, methods=["POST"])]
