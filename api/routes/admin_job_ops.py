"""Operators on jobs beyond the listing: search filters, one job in full (every attempt
with its worker and timings, and the event log, replayed and then live), failures grouped
by error, and bulk retry or cancel.

Every route checks the caller's role first (reading: admin, operator or viewer; acting:
admin or operator). A bulk action runs the same `retry_job` and `cancel_job` flows as the
single-job routes, one job at a time, so events, cancel flags and webhooks behave alike;
`dry_run` counts what it would change, which the dashboard shows before asking the
operator to confirm.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_act_jobs, require_read
from api.bodies import int_query, parse, path_id
from api.bodies import json_response as json
from api.context import services
from api.formats.job_events import EventSseWriter
from api.job_control import cancel_job, retry_job
from api.job_filters import FILTER_QUERY, filter_from_query, to_filter
from api.job_replies import StreamResponse
from api.job_stream import JobStream
from api.openapi import doc
from api.routes.admin_audit import record_action
from api.routes.admin_jobs import admin_job_read
from pipelines.db import job_search
from pipelines.db import jobs as jobs_db
from pipelines.errors import JobNotFound
from schemas.admin_jobs import (
    AdminJobDetail,
    AdminJobRead,
    AttemptRead,
    EventRead,
    FailureGroup,
    FailureGroupList,
    JobBulkAction,
    JobBulkResult,
)
from schemas.jobs import TERMINAL_EVENT_TYPES, Event

_BULK_BODY_BYTES = 16 * 1024
_MAX_EVENTS = 1000
_MAX_GROUPS = 100


@doc("Failed jobs grouped by error code and message signature, largest group first",
     response=FailureGroupList, tags=["admin"], query={**FILTER_QUERY, "limit": "integer"})
async def failures(request: Request) -> Response:
    require_read(request)
    where = filter_from_query(request)
    limit = int_query(request, "limit", 20, 1, _MAX_GROUPS)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(job_search.failure_groups(where, limit=limit))).all()
    return json(FailureGroupList(data=[
        FailureGroup(code=r.code, signature=r.signature, count=r.count,
                     kinds=sorted(k for k in r.kinds or [] if k), first_at=r.first_at,
                     last_at=r.last_at, example=r.example) for r in rows]))


@doc("Retry or cancel every job a filter matches; dry_run counts them first",
     body=JobBulkAction, response=JobBulkResult, tags=["admin"])
async def bulk(request: Request) -> Response:
    require_act_jobs(request)
    action = await parse(request, JobBulkAction, _BULK_BODY_BYTES)
    applies = ("failed", "cancelled") if action.action == "retry" else ("queued", "running")
    where = to_filter(action.filter, statuses=applies)
    svc = services(request)
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(job_search.matching(where, limit=action.limit))).all()
    if action.dry_run:
        return json(JobBulkResult(action=action.action, dry_run=True, matched=len(rows),
                                  changed=0, job_ids=[str(r.id) for r in rows]))
    changed: list[str] = []
    for row in rows:
        job_id = str(row.id)
        if action.action == "retry":
            done = await retry_job(svc, job_id, row.owner_id)
        else:
            done = await cancel_job(svc, job_id, row.owner_id, "cancelled by an operator")
        if done is not None:
            changed.append(job_id)
    if changed:
        await record_action(request, f"jobs.bulk_{action.action}", f"{len(changed)} jobs",
                            {"filter": action.filter.model_dump(mode="json", exclude_none=True),
                             "job_ids": changed})
    return json(JobBulkResult(action=action.action, dry_run=False, matched=len(rows),
                              changed=len(changed), job_ids=changed))


@doc("One job in full: input, result, error, its attempts and its event log",
     response=AdminJobDetail, tags=["admin"])
async def detail(request: Request) -> Response:
    require_read(request)
    job_id = path_id(request, "job_id", JobNotFound, "job")
    svc = services(request)
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(*jobs_db.get_any(job_id))).first()
        if row is None:
            raise JobNotFound(f"No job with id '{job_id}'.")
        attempts = (await conn.execute(jobs_db.attempts_of(job_id))).all()
    job: AdminJobRead = admin_job_read(row)
    events = await svc.events.backlog(job_id, count=_MAX_EVENTS + 1)
    kept = events[:_MAX_EVENTS]
    return json(AdminJobDetail(job=job, attempts=[attempt_read(a) for a in attempts],
                               events=[_event_read(e) for e in kept],
                               events_truncated=len(events) > _MAX_EVENTS))


@doc("A job's events for operators over SSE: the kept log, then live ones",
     streams=True, tags=["admin"])
async def events(request: Request) -> Response:
    require_read(request)
    job_id = path_id(request, "job_id", JobNotFound, "job")
    svc = services(request)
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(*jobs_db.get_any(job_id))).first()
    if row is None:
        raise JobNotFound(f"No job with id '{job_id}'.")

    async def stand_in() -> Event | None:
        # The log expired: the job's end, from its row (as the owners' stream does).
        return _terminal_from_row(row)

    stream = await JobStream.resume(svc.hub, svc.events, job_id, after=None,
                                    stand_in=stand_in,
                                    keepalive_s=svc.settings.sse_keepalive_s,
                                    lifetime_s=svc.settings.max_sse_lifetime_s)
    return StreamResponse(stream, EventSseWriter(), {})


def attempt_read(row: Row[Any]) -> AttemptRead:
    """One `job_attempts` row as operators see it."""
    ended = row.finished_at
    return AttemptRead(attempt=row.attempt, worker=row.worker_id, worker_id=row.worker_id,
                       host=row.host, pid=row.pid, started_at=row.started_at, ended_at=ended,
                       duration_s=(round((ended - row.started_at).total_seconds(), 6)
                                   if ended is not None else None),
                       outcome=row.outcome, error=row.error)


def _terminal_from_row(row: Row[Any]) -> Event | None:
    if row.status not in TERMINAL_EVENT_TYPES:
        return None
    millis = int(row.finished_at.timestamp() * 1000) if row.finished_at else 0
    data: dict[str, Any] = (
        {"result": row.result} if row.status == "succeeded" else {"error": row.error})
    return Event(id=f"{millis}-0", job_id=str(row.id), seq=0, type=row.status, data=data)


def _event_time(event_id: str) -> dt.datetime:
    millis = int(event_id.split("-", 1)[0])
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)


def _event_read(event: Event) -> EventRead:
    return EventRead(id=event.id, type=event.type, at=_event_time(event.id), data=event.data)


routes = [
    Route("/v1/admin/jobs/failures", failures, methods=["GET"]),
    Route("/v1/admin/jobs/bulk", bulk, methods=["POST"]),
    Route("/v1/admin/jobs/{job_id}", detail, methods=["GET"]),
    Route("/v1/admin/jobs/{job_id}/events", events, methods=["GET"]),
]
