"""Every SQL statement about jobs.

Statements are built here once and executed by whichever connection the caller holds:
the API's async one or a worker's sync one. Every status change is a conditional UPDATE,
so a redelivered message never completes a job twice and a cancelled job stays cancelled.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Executable,
    Select,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert

from pipelines.db.tables import jobs
from schemas.fields import as_utc

_ACTIVE = ("queued", "running")
_RETRYABLE = ("failed", "cancelled")


def new_job_id() -> str:
    return str(uuid.uuid4())


# The statements on every job's path are built once, with bind parameters, and executed as
# `conn.execute(*bound)`: building a Core statement and its cache key per call cost more
# Python time per job than the round trips themselves.
Bound = tuple[Executable, dict[str, Any]]

_INSERT = insert(jobs).returning(*jobs.c)
_INSERT_IDEMPOTENT = (
    insert(jobs)
    .on_conflict_do_nothing(index_elements=["owner_id", "idempotency_key"],
                            index_where=jobs.c.idempotency_key.isnot(None))
    .returning(*jobs.c)
)


def insert_job(
    *,
    job_id: str,
    kind: str,
    owner_id: str,
    input: dict[str, Any],
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    priority: int = 0,
    parent_id: str | None = None,
    key_id: str | None = None,
) -> Bound:
    """Insert a queued job; with an idempotency key, a repeat inserts nothing and returns no row."""
    values = {"id": job_id, "kind": kind, "owner_id": owner_id, "input": input,
              "idempotency_key": idempotency_key, "webhook_url": webhook_url,
              "priority": priority, "parent_id": parent_id, "key_id": key_id}
    return (_INSERT if idempotency_key is None else _INSERT_IDEMPOTENT), values


def by_idempotency_key(owner_id: str, key: str) -> Select:
    return select(jobs).where(jobs.c.owner_id == owner_id, jobs.c.idempotency_key == key)


_GET = select(jobs).where(jobs.c.id == bindparam("job_id"),
                          jobs.c.owner_id == bindparam("owner_id"))
_GET_ANY = select(jobs).where(jobs.c.id == bindparam("job_id"))


def get(job_id: str, owner_id: str) -> Bound:
    """A job as its owner sees it: someone else's id finds nothing, like a missing one."""
    return _GET, {"job_id": job_id, "owner_id": owner_id}


def get_any(job_id: str) -> Bound:
    return _GET_ANY, {"job_id": job_id}


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor this module made (a forged one
    may hold a naive or out-of-range instant, or another spelling of a UUID)."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    moment = datetime.fromisoformat(created)
    if moment.tzinfo is None:
        raise ValueError("a cursor's instant has a time zone")
    return as_utc(moment), str(uuid.UUID(job_id))


# What a listing reads: every column but `input` and `result`, which can be megabytes each
# (one unbounded answer once made `GET /v1/jobs?limit=1` take 2 s).
LISTING_COLUMNS = tuple(c for c in jobs.c if c.name not in ("input", "result"))


def list_for_owner(
    owner_id: str,
    *,
    limit: int,
    status: str | None = None,
    kind: str | None = None,
    cursor: tuple[datetime, str] | None = None,
) -> Select:
    """Newest first, keyset-paged on (created_at, id) so pages stay stable under inserts;
    `LISTING_COLUMNS` only."""
    return _page(select(*LISTING_COLUMNS).where(jobs.c.owner_id == owner_id), limit=limit,
                 status=status, kind=kind, cursor=cursor)


def list_all(
    *,
    limit: int,
    status: str | None = None,
    kind: str | None = None,
    owner_id: str | None = None,
    cursor: tuple[datetime, str] | None = None,
) -> Select:
    """Every owner's jobs for operators, paged like `list_for_owner`."""
    stmt = select(*LISTING_COLUMNS)
    if owner_id:
        stmt = stmt.where(jobs.c.owner_id == owner_id)
    return _page(stmt, limit=limit, status=status, kind=kind, cursor=cursor)


def _page(stmt: Select, *, limit: int, status: str | None, kind: str | None,
          cursor: tuple[datetime, str] | None) -> Select:
    if status:
        stmt = stmt.where(jobs.c.status == status)
    if kind:
        stmt = stmt.where(jobs.c.kind == kind)
    if cursor:
        created_at, job_id = cursor
        stmt = stmt.where(
            or_(
                jobs.c.created_at < created_at,
                and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
            )
        )
    return stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)


# GROUPING(status, kind) in `stats()`: which grouping set a row belongs to.
STATS_BY_STATUS, STATS_BY_KIND, STATS_OVERALL = 1, 2, 3


def stats(window_s: int) -> Select:
    """Counts per status, per kind and overall (in total and created in the window), and
    p50/p95 run time of jobs that succeeded in the window: one scan, via GROUPING SETS.

    Run time is `finished_at - started_at`, so it excludes time spent queued. The
    percentiles are computed for every grouping set; read them from the overall row.
    """
    since = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, window_s)
    run_s = func.extract("epoch", jobs.c.finished_at - jobs.c.started_at)
    done_recently = and_(jobs.c.status == "succeeded", jobs.c.finished_at >= since)
    return select(
        jobs.c.status,
        jobs.c.kind,
        func.grouping(jobs.c.status, jobs.c.kind).label("grouping"),
        func.count().label("total"),
        func.count().filter(jobs.c.created_at >= since).label("recent"),
        func.count().filter(done_recently).label("succeeded_recent"),
        func.percentile_cont(0.5).within_group(run_s).filter(done_recently).label("p50_s"),
        func.percentile_cont(0.95).within_group(run_s).filter(done_recently).label("p95_s"),
    ).group_by(func.grouping_sets(tuple_(jobs.c.status), tuple_(jobs.c.kind), tuple_()))


_MARK_RUNNING = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"), jobs.c.status.in_(_ACTIVE))
    .values(status="running", attempts=jobs.c.attempts + 1,
            started_at=func.coalesce(jobs.c.started_at, func.now()), updated_at=func.now())
    .returning(jobs.c.attempts, jobs.c.kind, jobs.c.input, jobs.c.owner_id, jobs.c.key_id)
)


def mark_running(job_id: str) -> Bound:
    """Claim a job for one attempt.

    `running` is accepted too: the broker redelivers only a message whose worker died
    (or that the sweeper found lost), so the earlier attempt is gone.
    """
    return _MARK_RUNNING, {"job_id": job_id}


def _finishing(**values: Any) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id == bindparam("job_id"), jobs.c.status == "running",
               jobs.c.attempts == bindparam("attempt"))
        .values(updated_at=func.now(), finished_at=func.now(), **values)
        .returning(jobs.c.id, jobs.c.webhook_url)
    )


_MARK_SUCCEEDED = _finishing(status="succeeded", result=bindparam("result", type_=JSONB),
                             progress=1.0, error=None)
_MARK_FAILED = _finishing(status="failed", error=bindparam("error", type_=JSONB))
_SET_PROGRESS = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"), jobs.c.status == "running",
           jobs.c.attempts == bindparam("attempt"))
    .values(progress=bindparam("progress"), updated_at=func.now())
)


def mark_succeeded(job_id: str, attempt: int, result: Any) -> Bound:
    return _MARK_SUCCEEDED, {"job_id": job_id, "attempt": attempt, "result": result}


def mark_failed(job_id: str, attempt: int, error: dict[str, Any]) -> Bound:
    return _MARK_FAILED, {"job_id": job_id, "attempt": attempt, "error": error}


def set_progress(job_id: str, attempt: int, progress: float) -> Bound:
    return _SET_PROGRESS, {"job_id": job_id, "attempt": attempt, "progress": progress}


_HOLD = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"), jobs.c.status == "running",
           jobs.c.attempts == bindparam("attempt"))
    .values(enqueued_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("hold_s")),
            updated_at=func.now())
)


def hold(job_id: str, attempt: int, hold_s: float) -> Bound:
    """A running job whose work continues in other jobs (a chain run waits for its steps):
    the sweeper, which re-sends jobs `running` without a message, leaves it for `hold_s`."""
    return _HOLD, {"job_id": job_id, "attempt": attempt, "hold_s": hold_s}


def cancel(job_id: str, owner_id: str) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.owner_id == owner_id, jobs.c.status.in_(_ACTIVE))
        .values(status="cancelled", updated_at=func.now(), finished_at=func.now(),
                error={"code": "CANCELLED", "message": "Cancelled by request."})
        .returning(*jobs.c)
    )


def requeue_for_retry(job_id: str, owner_id: str) -> Update:
    """Queue a failed or cancelled job again.

    `attempts` keeps counting: it fences each attempt's finishing UPDATE and its events, so
    a cancelled attempt still winding down can never complete the retried job.
    """
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.owner_id == owner_id, jobs.c.status.in_(_RETRYABLE))
        .values(status="queued", progress=0.0, result=None, error=None,
                finished_at=None, updated_at=func.now(), enqueued_at=func.now())
        .returning(*jobs.c)
    )


def claim_stale(stale_after_s: float, limit: int) -> Update:
    """Jobs queued (or running) for too long; the sweeper checks the broker before re-sending.

    Bumping `enqueued_at` in the same statement means two sweepers never take the same row.
    """
    stale = (
        select(jobs.c.id)
        .where(
            jobs.c.status.in_(_ACTIVE),
            jobs.c.enqueued_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stale_after_s),
            jobs.c.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stale_after_s),
        )
        .order_by(jobs.c.enqueued_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(jobs)
        .where(jobs.c.id.in_(stale))
        .values(enqueued_at=func.now())
        .returning(jobs.c.id, jobs.c.kind, jobs.c.status)
    )

