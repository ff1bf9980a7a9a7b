"""Jobs: submit, read, list, cancel, retry, and follow their events over SSE or WebSocket."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from api.bodies import parse, path_id
from api.context import Services, principal, services
from api.errors import ApiError, validation_details
from api.job_control import cancel_job as cancel_job_flow
from api.job_control import retry_job as retry_job_flow
from api.job_control import submit_job
from api.limits import spend_job_allowance
from api.sse import job_event_stream, job_event_websocket
from pipelines.db import jobs as jobs_db
from pipelines.errors import Conflict, JobNotFound
from schemas.job_kinds import JOB_PAYLOADS
from schemas.jobs import JobCreate, JobLinks, JobList, JobRead, JobStatus, JobSummary
from schemas.openai import ChatCompletionRequest

_MAX_IDEMPOTENCY_KEY = 255


def job_summary(row: Row[Any]) -> JobSummary:
    """A job as listings show it, from a row of `jobs_db.LISTING_COLUMNS` (or a full one)."""
    return JobSummary(
        id=str(row.id), kind=row.kind, status=JobStatus(row.status), progress=row.progress,
        attempts=row.attempts, error=row.error,
        parent_id=str(row.parent_id) if row.parent_id else None, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at,
        links=JobLinks(self=f"/v1/jobs/{row.id}", events=f"/v1/jobs/{row.id}/events"),
    )


def job_read(row: Row[Any]) -> JobRead:
    return JobRead(**dict(job_summary(row)), input=row.input, result=row.result)


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json",
                    headers=headers)


def _job_id(request: Request | WebSocket) -> str:
    return path_id(request, "job_id", JobNotFound, "job")


async def load_job(request: Request | WebSocket, job_id: str) -> Row[Any]:
    async with services(request).autocommit.connect() as conn:
        row = (await conn.execute(*jobs_db.get(job_id, principal(request).owner_id))).first()
    if row is None:
        raise JobNotFound(f"No job with id '{job_id}'.")
    return row


async def create_job(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, JobCreate, svc.settings.max_json_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= _MAX_IDEMPOTENCY_KEY):
        raise ApiError(400, "VALIDATION_FAILED",
                       f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters.")
    await _validate_input(svc, body)
    row, created = await submit_job(
        svc, kind=body.kind, owner_id=principal(request).owner_id, input=body.input,
        key_id=principal(request).key_id,
        idempotency_key=key, priority=body.priority,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
    )
    headers = {"Location": f"/v1/jobs/{row.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(job_read(row), status=202, headers=headers)


async def _validate_input(svc: Services, body: JobCreate) -> None:
    """Reject a job the worker could only fail, before it is queued: every kind's input is
    checked with the payload model its actor validates with (schemas/job_kinds.py)."""
    payload = JOB_PAYLOADS[body.kind]
    if payload is None:
        return
    try:
        spec = payload.model_validate(body.input)
    except ValidationError as exc:
        details = validation_details(exc)
        for detail in details:
            detail["field"] = f"input.{detail['field']}"
        raise ApiError(422, "VALIDATION_FAILED",
                       f"Invalid {body.kind} input: {details[0]['field']}: "
                       f"{details[0]['message']}", details=details) from None
    if isinstance(spec, ChatCompletionRequest):
        await svc.models.resolve(spec.model)


async def get_job(request: Request) -> Response:
    return _json(job_read(await load_job(request, _job_id(request))))


async def list_jobs(request: Request) -> Response:
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in JobStatus.__members__:
        raise ApiError(422, "VALIDATION_FAILED", f"Unknown status '{status}'.", param="status")
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        raise ApiError(422, "VALIDATION_FAILED", "limit must be an integer.",
                       param="limit") from None
    if not 1 <= limit <= 100:
        raise ApiError(422, "VALIDATION_FAILED", "limit must be between 1 and 100.",
                       param="limit")
    cursor = None
    if raw := params.get("cursor"):
        try:
            cursor = jobs_db.decode_cursor(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "VALIDATION_FAILED", "cursor is not valid.",
                           param="cursor") from None
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(jobs_db.list_for_owner(
            principal(request).owner_id, limit=limit + 1, status=status,
            kind=params.get("kind"), cursor=cursor,
        ))).all()
    page, more = rows[:limit], len(rows) > limit
    next_cursor = jobs_db.encode_cursor(page[-1].created_at, str(page[-1].id)) if more else None
    return _json(JobList(data=[job_summary(r) for r in page], next_cursor=next_cursor))


async def cancel_job(request: Request) -> Response:
    job_id = _job_id(request)
    row = await cancel_job_flow(services(request), job_id, principal(request).owner_id,
                                "requested")
    if row is None:
        current = await load_job(request, job_id)
        raise Conflict(f"The job is already {current.status}.")
    return _json(job_read(row))


async def retry_job(request: Request) -> Response:
    job_id = _job_id(request)
    current = await load_job(request, job_id)
    # A retry runs the job again: it costs the caller what submitting it did.
    await spend_job_allowance(current.kind)
    row = await retry_job_flow(services(request), job_id, principal(request).owner_id)
    if row is None:
        raise Conflict(f"Only failed or cancelled jobs can be retried; this one is "
                       f"{current.status}.")
    return _json(job_read(row), status=202)


async def job_events(request: Request) -> Response:
    job_id = _job_id(request)
    row = await load_job(request, job_id)
    return await job_event_stream(request, row)


async def job_websocket(websocket: WebSocket) -> None:
    await job_event_websocket(websocket, _job_id, load_job)


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
    WebSocketRoute("/v1/jobs/{job_id}/ws", job_websocket),
]
