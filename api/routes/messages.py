"""`POST /v1/messages`: the Anthropic Messages API over a chat job.

The body is validated as Anthropic's, translated into the internal OpenAI body (so any
provider can answer), run as a `chat` job, and rendered back in Anthropic's format,
streamed or whole. Errors use Anthropic's shape (api/errors.py picks it by path).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import parse
from api.context import services
from api.formats import anthropic as fmt
from api.job_replies import open_chat, streamed_answer, whole_answer
from api.openapi import doc
from pipelines.tokens import count_message_tokens
from pipelines.translate import anthropic_request_to_openai
from schemas.anthropic import MessagesRequest
from schemas.openai import ChatCompletionRequest


@doc("Anthropic Messages (streamed as Messages SSE events, or whole)", body=MessagesRequest,
     streams=True, tags=["inference"])
async def create_message(request: Request) -> Response:
    started_at = time.perf_counter()
    svc = services(request)
    body = await parse(request, MessagesRequest, svc.settings.max_json_body_bytes)
    openai_body = anthropic_request_to_openai(body.model_dump(exclude_none=True))
    job_input = ChatCompletionRequest.model_validate(openai_body).job_input()
    stream = await open_chat(request, job_input, streamed=body.stream,
                             cancel_on_disconnect=True, started_at=started_at)
    msg_id = fmt.message_id(stream.job_id)
    if not body.stream:
        return await whole_answer(request, stream,
                                  lambda result: fmt.message(msg_id, body.model, result))
    input_tokens = count_message_tokens(job_input["messages"], body.model)
    writer = fmt.MessageStreamWriter(msg_id, body.model, input_tokens)
    return await streamed_answer(request, stream, writer)


routes = [Route("/v1/messages", create_message, methods=["POST"])]
