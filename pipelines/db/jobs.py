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

from sqlalchemy import Insert, Select, Update, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from pipelines.db.tables import jobs

_ACTIVE = ("queued", "running")
_RETRYABLE = ("failed", "cancelled")


def new_job_id() -> str:
    return str(uuid.uuid4())


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
) -> Insert:
    """Insert a queued job; with an idempotency key, a repeat inserts nothing and returns no row."""
    stmt = insert(jobs).values(
        id=job_id,
        kind=kind,
        owner_id=owner_id,
        input=input,
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        priority=priority,
        parent_id=parent_id,
        key_id=key_id,
    )
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=["owner_id", "idempotency_key"],
            index_where=jobs.c.idempotency_key.isnot(None),
        )
    return stmt.returning(*jobs.c)


def by_idempotency_key(owner_id: str, key: str) -> Select:
    return select(jobs).where(jobs.c.owner_id == owner_id, jobs.c.idempotency_key == key)


def get(job_id: str, owner_id: str) -> Select:
    """A job as its owner sees it: someone else's id finds nothing, like a missing one."""
    return select(jobs).where(jobs.c.id == job_id, jobs.c.owner_id == owner_id)


def get_any(job_id: str) -> Select:
    return select(jobs).where(jobs.c.id == job_id)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor this module made."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    uuid.UUID(job_id)
    return datetime.fromisoformat(created), job_id


def list_for_owner(
    owner_id: str,
    *,
    limit: int,
    status: str | None = None,
    kind: str | None = None,
    cursor: tuple[datetime, str] | None = None,
) -> Select:
    """Newest first, keyset-paged on (created_at, id) so pages stay stable under inserts."""
    stmt = select(jobs).where(jobs.c.owner_id == owner_id)
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


def mark_running(job_id: str) -> Update:
    """Claim a job for one attempt.

    `running` is accepted too: the broker redelivers only a message whose worker died
    (or that the sweeper found lost), so the earlier attempt is gone.
    """
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(_ACTIVE))
        .values(
            status="running",
            attempts=jobs.c.attempts + 1,
            started_at=func.coalesce(jobs.c.started_at, func.now()),
            updated_at=func.now(),
        )
        .returning(jobs.c.attempts, jobs.c.kind, jobs.c.input, jobs.c.owner_id, jobs.c.key_id)
    )


def _finish(job_id: str, attempt: int, **values: Any) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.attempts == attempt)
        .values(updated_at=func.now(), finished_at=func.now(), **values)
        .returning(jobs.c.id, jobs.c.webhook_url)
    )


def mark_succeeded(job_id: str, attempt: int, result: Any) -> Update:
    return _finish(job_id, attempt, status="succeeded", result=result, progress=1.0, error=None)


def mark_failed(job_id: str, attempt: int, error: dict[str, Any]) -> Update:
    return _finish(job_id, attempt, status="failed", error=error)


def set_progress(job_id: str, attempt: int, progress: float) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.attempts == attempt)
        .values(progress=progress, updated_at=func.now())
    )


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

