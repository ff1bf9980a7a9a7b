"""`POST /v1/knowledge/ask`: retrieve (hybrid), then answer with a chat job citing `[n]`.

Streamed as SSE — `sources` once the job starts, `text-delta` per delta, then `finish`
with the whole answer, its sources, model and usage (or `error`) — or answered whole.
When nothing relevant is found no model is called: the answer says so, with no sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import json_response, parse
from api.context import services
from api.formats.own import NamedEventWriter, sse_frame, text_delta
from api.formats.sse import KEEPALIVE_FRAME, SSE_HEADERS
from api.job_replies import event_stream, open_chat, whole_answer
from api.openapi import doc
from api.routes.knowledge import run_search
from pipelines.answer import NO_ANSWER, build_messages, relevant, select_sources, source_list
from schemas.jobs import Event
from schemas.knowledge import AskRequest, AskResponse, AskSource

_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@doc("Answer a question from knowledge bases, citing sources as [n] (SSE if stream)",
     body=AskRequest, response=AskResponse, streams=True, tags=["knowledge"])
async def ask(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, AskRequest, svc.settings.max_json_body_bytes)
    await svc.models.resolve(body.model)
    hits = await run_search(request, body.question, body.knowledge_ids, "hybrid",
                            max(body.context_limit * 2, 10), body.filters)
    max_chars = svc.settings.ask_max_context_chars
    sources = select_sources(relevant(hits, svc.settings.ask_min_similarity),
                             limit=body.context_limit, max_chars=max_chars)
    if not sources:
        nothing = AskResponse(answer=NO_ANSWER, sources=[], model=body.model,
                              usage=_ZERO_USAGE)
        if body.stream:
            return StreamingResponse(_nothing_found(nothing), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return json_response(nothing)
    job_input: dict[str, Any] = {"model": body.model,
                                 "messages": build_messages(body.question, sources, max_chars)}
    if body.max_tokens is not None:
        job_input["max_tokens"] = body.max_tokens
    if body.temperature is not None:
        job_input["temperature"] = body.temperature
    # Hanging up does not cancel the answer: its result stays readable by id.
    stream = await open_chat(request, job_input, streamed=body.stream,
                             cancel_on_disconnect=False)
    job_id = stream.job_id
    cited = source_list(sources)

    def answer(result: dict[str, Any]) -> dict[str, Any]:
        return _answer(result, cited, job_id).model_dump(mode="json")

    if body.stream:
        return event_stream(stream, NamedEventWriter(job_id, _renderer(cited, job_id), answer))
    return await whole_answer(request, stream, answer)


def _answer(result: dict[str, Any], sources: list[dict[str, Any]], job_id: str) -> AskResponse:
    return AskResponse(answer=result.get("content") or "",
                       sources=[AskSource(**source) for source in sources],
                       model=result.get("model") or "", usage=result.get("usage") or _ZERO_USAGE,
                       job_id=job_id)


def _renderer(sources: list[dict[str, Any]], job_id: str) -> Callable[[Event], bytes | None]:
    def render(event: Event) -> bytes | None:
        if event.type == "started":
            return sse_frame("sources", {"sources": sources, "job_id": job_id})
        return text_delta(event)

    return render


async def _nothing_found(answer: AskResponse) -> AsyncIterator[bytes]:
    yield KEEPALIVE_FRAME
    yield sse_frame("sources", {"sources": [], "job_id": None})
    yield sse_frame("text-delta", {"text": answer.answer})
    yield sse_frame("finish", answer.model_dump(mode="json"))


routes = [Route("/v1/knowledge/ask", ask, methods=["POST"])]
