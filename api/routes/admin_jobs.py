"""Admin: every owner's jobs, counts and run times across them, and cancel or retry any job.

Every handler checks the role first, so a non-admin learns nothing, not even whether a job
id exists. Cancel and retry load the job to find its real owner and then run the same
flows as the owner's own routes, so events, the cancel flag and webhooks behave alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.admin_state import read_stats
from api.auth import require_act_jobs, require_read
from api.bodies import json_response as json
from api.bodies import path_id
from api.context import services
from api.errors import ApiError
from api.job_control import cancel_job, retry_job
from api.job_filters import FILTER_QUERY, filter_from_query
from api.openapi import doc
from api.routes.admin_audit import record_action
from api.routes.jobs import job_read, job_summary
from pipelines.db import job_search
from pipelines.db import jobs as jobs_db
from pipelines.errors import Conflict, JobNotFound
from schemas.admin_jobs import (
    AdminJobList,
    AdminJobRead,
    AdminJobSummary,
    JobStats,
)

_MAX_PAGE = 100


def admin_job_read(row: Row[Any]) -> AdminJobRead:
    return AdminJobRead(**dict(job_read(row)), owner_id=row.owner_id)


def admin_job_summary(row: Row[Any]) -> AdminJobSummary:
    return AdminJobSummary(**dict(job_summary(row)), owner_id=row.owner_id)


@doc("Every owner's jobs, newest first, keyset-paged like GET /v1/jobs; filtered by "
     "status, kind, owner, model, queue, creation time range and error text",
     response=AdminJobList, tags=["admin"],
     query={**FILTER_QUERY, "limit": "integer", "cursor": "string"})
async def list_jobs(request: Request) -> Response:
    require_read(request)
    params = request.query_params
    limit = _limit(params.get("limit", "20"))
    where = filter_from_query(request)
    cursor = None
    if raw := params.get("cursor"):
        try:
            cursor = jobs_db.decode_cursor(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "VALIDATION_FAILED", "cursor is not valid.",
                           param="cursor") from None
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(job_search.search(where, limit=limit + 1,
                                                     cursor=cursor))).all()
    page, more = rows[:limit], len(rows) > limit
    next_cursor = jobs_db.encode_cursor(page[-1].created_at, str(page[-1].id)) if more else None
    return json(AdminJobList(data=[admin_job_summary(r) for r in page],
                             next_cursor=next_cursor))


def _limit(raw: str) -> int:
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(422, "VALIDATION_FAILED", "limit must be an integer.",
                       param="limit") from None
    if not 1 <= limit <= _MAX_PAGE:
        raise ApiError(422, "VALIDATION_FAILED", f"limit must be between 1 and {_MAX_PAGE}.",
                       param="limit")
    return limit


@doc("Jobs per status and kind (in total and in the last hour), and p50/p95 run time of "
     "jobs that succeeded in the last hour", response=JobStats, tags=["admin"])
async def job_stats(request: Request) -> Response:
    require_read(request)
    return json(await read_stats(services(request)))


@doc("Cancel any owner's queued or running job", response=AdminJobRead, tags=["admin"])
async def cancel(request: Request) -> Response:
    require_act_jobs(request)
    job = await _load(request)
    row = await cancel_job(services(request), str(job.id), job.owner_id,
                           "cancelled by an administrator")
    if row is None:
        raise Conflict(f"The job is already {(await _load(request)).status}.")
    await record_action(request, "job.cancel", str(job.id), {"owner_id": job.owner_id})
    return json(admin_job_read(row))


@doc("Retry any owner's failed or cancelled job", response=AdminJobRead, status=202,
     tags=["admin"])
async def retry(request: Request) -> Response:
    require_act_jobs(request)
    job = await _load(request)
    row = await retry_job(services(request), str(job.id), job.owner_id)
    if row is None:
        raise Conflict(f"Only failed or cancelled jobs can be retried; this one is "
                       f"{(await _load(request)).status}.")
    await record_action(request, "job.retry", str(job.id), {"owner_id": job.owner_id})
    return json(admin_job_read(row), status=202)


async def _load(request: Request) -> Row[Any]:
    job_id = path_id(request, "job_id", JobNotFound, "job")
    async with services(request).autocommit.connect() as conn:
        row = (await conn.execute(*jobs_db.get_any(job_id))).first()
    if row is None:
        raise JobNotFound(f"No job with id '{job_id}'.")
    return row


routes = [
    Route("/v1/admin/jobs", list_jobs, methods=["GET"]),
    Route("/v1/admin/jobs/stats", job_stats, methods=["GET"]),
    Route("/v1/admin/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/admin/jobs/{job_id}/retry", retry, methods=["POST"]),
]
