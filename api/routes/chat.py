"""`POST /v1/chat/completions`: a chat job, answered in OpenAI's format (streamed or whole)."""

from __future__ import annotations

import time

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
from api.conversation_turns import with_conversation
from api.formats import openai as fmt
from api.openapi import doc
from api.sse import SSE_HEADERS
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
    seen = await opening(job)
    if not seen:
        return not_started_response("openai", "completion")
    if (error := failure_of(seen)) is not None:
        return error_response("openai", error)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = fmt.ChunkWriter(completion_id, body.model, created, include_usage)
    frames = relay(job, replay(seen, job.events), writer, wire="openai",
                   opening=writer.role(), keepalive=b": keep-alive\n\n",
                   error_frame=fmt.error_frame)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


async def _whole(job: ChatJob, completion_id: str, created: int) -> Response:
    terminal = await last_event(job)
    if terminal is None or terminal.type != "succeeded":
        return failure_response("openai", terminal, "completion")
    body = fmt.completion(completion_id, created, terminal.data["result"])
    return Response(orjson.dumps(body), media_type="application/json")


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
