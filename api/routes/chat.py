"""`POST /v1/chat/completions`: a chat job, answered in OpenAI's format (streamed or whole)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import parse
from api.context import services
from api.conversation_turns import with_conversation
from api.formats import openai as fmt
from api.job_replies import open_chat, streamed_answer, whole_answer
from api.openapi import doc
from schemas.openai import ChatCompletionRequest


@doc("OpenAI Chat Completions (streamed as chat.completion.chunk SSE, or whole)",
     body=ChatCompletionRequest, streams=True, tags=["inference"])
async def chat_completions(request: Request) -> Response:
    started_at = time.perf_counter()
    svc = services(request)
    body = await parse(request, ChatCompletionRequest, svc.settings.max_json_body_bytes)
    job_input, on_submit = await with_conversation(request, body.job_input())
    stream = await open_chat(request, job_input, streamed=body.stream,
                             cancel_on_disconnect=True, on_submit=on_submit,
                             started_at=started_at)
    completion_id = "chatcmpl-" + stream.job_id.replace("-", "")
    created = int(time.time())
    if not body.stream:
        return await whole_answer(request, stream,
                                  lambda result: fmt.completion(completion_id, created, result))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = fmt.ChunkWriter(completion_id, body.model, created, include_usage)
    return await streamed_answer(request, stream, writer)


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
