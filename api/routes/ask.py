"""`POST /v1/knowledge/ask`: retrieve (hybrid), then answer with a chat job citing `[n]`.

Streamed as SSE — `sources` once the job starts, `text-delta` per delta, then `finish`
with the whole answer, its sources, model and usage (or `error`) — or answered whole.
When nothing relevant is found no model is called: the answer says so, with no sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.bodies import json_response, parse
from api.context import principal, services
from api.job_control import submit_job
from api.job_replies import failure_response, relay, sse_frame, wait_for_end
from api.openapi import doc
from api.routes.knowledge import run_search
from api.sse import KEEPALIVE_FRAME, SSE_HEADERS
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
    who = principal(request)
    row, _ = await submit_job(svc, kind="chat", owner_id=who.owner_id, input=job_input,
                              key_id=who.key_id)
    job_id = str(row.id)
    cited = source_list(sources)
    if body.stream:
        return relay(svc, job_id, _renderer(cited, job_id))
    terminal = await wait_for_end(svc, job_id)
    if terminal is None or terminal.type != "succeeded":
        return failure_response(request, terminal, job_id)
    return json_response(_answer(terminal.data["result"], cited, job_id),
                         headers={"X-Job-ID": job_id})


def _answer(result: dict[str, Any], sources: list[dict[str, Any]], job_id: str) -> AskResponse:
    return AskResponse(answer=result.get("content") or "",
                       sources=[AskSource(**source) for source in sources],
                       model=result.get("model") or "", usage=result.get("usage") or _ZERO_USAGE,
                       job_id=job_id)


def _renderer(sources: list[dict[str, Any]], job_id: str) -> Any:
    def render(event: Event) -> list[bytes]:
        if event.type == "started":
            return [sse_frame("sources", {"sources": sources, "job_id": job_id})]
        if event.type == "delta" and event.data.get("text"):
            return [sse_frame("text-delta", {"text": event.data["text"]})]
        if event.type == "succeeded":
            answer = _answer(event.data["result"], sources, job_id)
            return [sse_frame("finish", answer.model_dump(mode="json"))]
        return []

    return render


async def _nothing_found(answer: AskResponse) -> AsyncIterator[bytes]:
    yield KEEPALIVE_FRAME
    yield sse_frame("sources", {"sources": [], "job_id": None})
    yield sse_frame("text-delta", {"text": answer.answer})
    yield sse_frame("finish", answer.model_dump(mode="json"))


routes = [Route("/v1/knowledge/ask", ask, methods=["POST"])]
