"""`POST /v1/compare`: one prompt to 2–4 models at once, as a `compare` job.

Answered whole (200, once the job ends), streamed (SSE: `model-start`, `text-delta` and
`model-finish` tagged with the model, then `finish` with every result), or, with
`async: true`, as the job itself (202) to poll or follow.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import parse
from api.context import principal, services
from api.formats.own import NamedEventWriter, sse_frame
from api.job_control import submit_job
from api.job_replies import event_stream, open_job, whole_answer
from api.openapi import doc
from api.routes.jobs import job_read
from schemas.compare import CompareRequest, CompareResult
from schemas.jobs import Event


def _frame(event: Event) -> bytes | None:
    data = event.data
    tag = {"model": data.get("model"), "index": data.get("index")}
    if event.type == "step_started":
        return sse_frame("model-start", tag)
    if event.type == "delta" and data.get("text"):
        return sse_frame("text-delta", {**tag, "text": data["text"]})
    if event.type == "step_completed":
        return sse_frame("model-finish", {**tag, **data["result"]})
    return None


def _answer(result: Any) -> Any:
    return result


@doc("Run one prompt on 2–4 models concurrently: per model response, tokens, duration, "
     "time to first token, cost (SSE if stream; 202 with the job if async)",
     body=CompareRequest, response=CompareResult, streams=True, tags=["compare"])
async def compare(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, CompareRequest, svc.settings.max_json_body_bytes)
    # Unknown ids are the caller's mistake, so they fail the request; a model that fails
    # while answering is reported in its own result instead.
    for model_id in body.models:
        await svc.models.resolve(model_id)
    if body.async_:
        owner = principal(request)
        row, _ = await submit_job(svc, kind="compare", owner_id=owner.owner_id,
                                  input=body.job_input(), key_id=owner.key_id)
        job_id = str(row.id)
        return Response(job_read(row).model_dump_json(), status_code=202,
                        media_type="application/json",
                        headers={"Location": f"/v1/jobs/{job_id}", "X-Job-ID": job_id})
    # Hanging up does not cancel a comparison: its result stays readable by id.
    stream = await open_job(request, kind="compare", input=body.job_input(),
                            cancel_on_disconnect=False)
    if body.stream:
        return event_stream(stream, NamedEventWriter(stream.job_id, _frame, _answer))
    return await whole_answer(request, stream, _answer)


routes = [Route("/v1/compare", compare, methods=["POST"])]
