"""Every SQL statement about jobs.

Statements are built here once and executed by whichever connection the caller holds:
the API's async one or a worker's sync one. Every status change is a conditional UPDATE,
so a redelivered message never completes a job twice and a cancelled job stays cancelled.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Executable,
    Integer,
    Select,
    Text,
    Update,
    and_,
    bindparam,
    func,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert

from pipelines.db.tables import job_attempts, jobs
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


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker process as its attempts record it, and as it announces itself in its
    presence heartbeats (workers/presence.py): `host:pid`."""

    host: str
    pid: int

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}"

    @classmethod
    def this_process(cls) -> Worker:
        return cls(socket.gethostname(), os.getpid())


# Claiming a job is one statement: the job's UPDATE, the attempt's row (who runs it, from
# when), and any earlier attempt left unfinished marked `lost` (its worker died: the
# broker redelivers only then, or the sweeper re-sent the job).
# The statements that write `job_attempts` name their parameters apart from its columns
# (`job`, `attempt_no`, ...): SQLAlchemy adds an execution parameter named like a column
# of an UPDATE's table to that UPDATE's SET clause, CTEs included.
_CLAIMED = (
    update(jobs)
    .where(jobs.c.id == bindparam("job"), jobs.c.status.in_(_ACTIVE))
    .values(status="running", attempts=jobs.c.attempts + 1,
            started_at=func.coalesce(jobs.c.started_at, func.now()), updated_at=func.now())
    .returning(jobs.c.id, jobs.c.attempts, jobs.c.kind, jobs.c.input, jobs.c.owner_id,
               jobs.c.key_id)
    .cte("claimed")
)
_ATTEMPT_OPENED = (
    insert(job_attempts)
    .from_select(["job_id", "attempt", "worker_id", "host", "pid"],
                 select(_CLAIMED.c.id, _CLAIMED.c.attempts,
                        bindparam("by_worker", type_=Text), bindparam("by_host", type_=Text),
                        bindparam("by_pid", type_=Integer)))
    .on_conflict_do_nothing(index_elements=["job_id", "attempt"])
    .cte("attempt_opened")
)
_ATTEMPTS_LOST = (
    update(job_attempts)
    .where(job_attempts.c.job_id == _CLAIMED.c.id,
           job_attempts.c.attempt < _CLAIMED.c.attempts,
           job_attempts.c.outcome.is_(None))
    .values(outcome="lost")
    .cte("attempts_lost")
)
_MARK_RUNNING = (
    select(_CLAIMED.c.attempts, _CLAIMED.c.kind, _CLAIMED.c.input, _CLAIMED.c.owner_id,
           _CLAIMED.c.key_id)
    .add_cte(_ATTEMPT_OPENED, _ATTEMPTS_LOST)
)


def mark_running(job_id: str, worker: Worker | None = None) -> Bound:
    """Claim a job for one attempt run by `worker` (default: this process), and record
    the attempt in the same statement.

    `running` is accepted too: the broker redelivers only a message whose worker died
    (or that the sweeper found lost), so the earlier attempt is gone.
    """
    by = worker or Worker.this_process()
    return _MARK_RUNNING, {"job": job_id, "by_worker": by.id, "by_host": by.host,
                           "by_pid": by.pid}


_ERROR = bindparam("error_body", type_=JSONB)


def _finishing(outcome: str, **values: Any) -> Select:
    """The job's terminal UPDATE (if this attempt still owns the job), and its attempt's
    row finished in the same statement."""
    done = (
        update(jobs)
        .where(jobs.c.id == bindparam("job"), jobs.c.status == "running",
               jobs.c.attempts == bindparam("attempt_no"))
        .values(updated_at=func.now(), finished_at=func.now(), **values)
        .returning(jobs.c.id, jobs.c.webhook_url)
        .cte("done")
    )
    ended = (
        update(job_attempts)
        .where(job_attempts.c.job_id == done.c.id,
               job_attempts.c.attempt == bindparam("attempt_no"))
        .values(finished_at=func.now(), outcome=outcome,
                error=_ERROR if outcome == "failed" else null())
        .cte("attempt_ended")
    )
    return select(done.c.id, done.c.webhook_url).add_cte(ended)


_MARK_SUCCEEDED = _finishing("succeeded", status="succeeded",
                             result=bindparam("result", type_=JSONB), progress=1.0,
                             error=None)
_MARK_FAILED = _finishing("failed", status="failed", error=_ERROR)
_END_ATTEMPT = (
    update(job_attempts)
    .where(job_attempts.c.job_id == bindparam("job"),
           job_attempts.c.attempt == bindparam("attempt_no"), job_attempts.c.outcome.is_(None))
    .values(finished_at=func.now(), outcome=bindparam("outcome_name", type_=Text),
            error=_ERROR)
)
_SET_PROGRESS = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"), jobs.c.status == "running",
           jobs.c.attempts == bindparam("attempt"))
    .values(progress=bindparam("progress"), updated_at=func.now())
)


def mark_succeeded(job_id: str, attempt: int, result: Any) -> Bound:
    return _MARK_SUCCEEDED, {"job": job_id, "attempt_no": attempt, "result": result}


def mark_failed(job_id: str, attempt: int, error: dict[str, Any]) -> Bound:
    return _MARK_FAILED, {"job": job_id, "attempt_no": attempt, "error_body": error}


def end_attempt(job_id: str, attempt: int, outcome: str,
                error: dict[str, Any] | None = None) -> Bound:
    """Finish an attempt that did not end the job: `retried` (the broker runs the message
    again) or `cancelled` (the job was cancelled under it). Off the hot path: only a
    failing or cancelled attempt runs it."""
    return _END_ATTEMPT, {"job": job_id, "attempt_no": attempt, "outcome_name": outcome,
                          "error_body": error}


def attempts_of(job_id: str) -> Select:
    """A job's attempts, first to last."""
    return (select(job_attempts).where(job_attempts.c.job_id == job_id)
            .order_by(job_attempts.c.attempt))


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


def cancel(job_id: str, owner_id: str) -> Select:
    """Cancel a queued or running job; a running attempt's row ends `cancelled` in the
    same statement. Yields the job's row when it was cancelled."""
    done = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.owner_id == owner_id, jobs.c.status.in_(_ACTIVE))
        .values(status="cancelled", updated_at=func.now(), finished_at=func.now(),
                error={"code": "CANCELLED", "message": "Cancelled by request."})
        .returning(*jobs.c)
        .cte("cancelled")
    )
    ended = (
        update(job_attempts)
        .where(job_attempts.c.job_id == done.c.id, job_attempts.c.attempt == done.c.attempts,
               job_attempts.c.outcome.is_(None))
        .values(finished_at=func.now(), outcome="cancelled")
        .cte("attempt_cancelled")
    )
    return select(*done.c).add_cte(ended)


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

