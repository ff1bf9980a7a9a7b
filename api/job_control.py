"""Starting and stopping jobs from the API.

Submitting inserts the row, commits, announces `queued`, then enqueues.

Never enqueue inside an open transaction: a worker could pick the message up before the row
is visible. If the broker is down after the commit, the sweeper sends the job later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from api.context import Services
from api.limits import release_job_lease, spend_job_allowance
from api.webhook_events import fire
from pipelines import outbound
from pipelines.db import jobs as jobs_db
from pipelines.errors import Conflict
from schemas.jobs import WEBHOOK_ROUTE

log = logging.getLogger("switchyard.api")

# Writes rows that belong with a new job, in the job's own transaction: (conn, job_id).
OnSubmit = Callable[[AsyncConnection, str], Awaitable[None]]


async def submit_job(
    services: Services,
    *,
    kind: str,
    owner_id: str,
    input: dict[str, Any],
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    priority: int = 0,
    parent_id: str | None = None,
    key_id: str | None = None,
    on_submit: OnSubmit | None = None,
    job_id: str | None = None,
) -> tuple[Row[Any], bool]:
    """Returns (job row, created); an idempotent repeat returns the first job, not a new one.

    `on_submit(conn, job_id)` writes rows that belong with a new job in the job's own
    transaction (e.g. a conversation's user turn), so they exist before any worker runs.
    A caller that subscribes to the job's events before submitting picks `job_id` itself.

    Every job spends the caller's rate-limit allowance for its kind (api/limits.py), and a
    `webhook_url` must reach an address the outbound policy allows (422 otherwise).
    """
    job_id = job_id or jobs_db.new_job_id()
    # A child job runs inside its parent's lease; every other job holds one of its own.
    await spend_job_allowance(kind, job_id if parent_id is None else None)
    try:
        return await _insert_and_send(services, kind=kind, owner_id=owner_id, input=input,
                                      idempotency_key=idempotency_key,
                                      webhook_url=webhook_url, priority=priority,
                                      parent_id=parent_id, key_id=key_id,
                                      on_submit=on_submit, job_id=job_id)
    except BaseException:
        await release_job_lease(job_id)
        raise


async def _insert_and_send(services: Services, *, kind: str, owner_id: str,
                           input: dict[str, Any], idempotency_key: str | None,
                           webhook_url: str | None, priority: int, parent_id: str | None,
                           key_id: str | None, on_submit: OnSubmit | None,
                           job_id: str) -> tuple[Row[Any], bool]:
    if webhook_url is not None:
        settings = services.settings
        await outbound.check_async(webhook_url, outbound.OutboundPolicy.of(
            settings.outbound_allow_private, settings.outbound_allowed_hosts))
    if kind in ("chat", "compare"):  # max_tokens over a model's cap: 400, and no job
        await services.models.check_job_output_tokens(input)
    # A lone INSERT needs no transaction around it (one round trip instead of three).
    async with (services.engine.begin() if on_submit else services.autocommit.connect()) as conn:
        row = (await conn.execute(*jobs_db.insert_job(
            job_id=job_id, kind=kind, owner_id=owner_id, input=input,
            idempotency_key=idempotency_key, webhook_url=webhook_url, priority=priority,
            parent_id=parent_id, key_id=key_id,
        ))).first()
        if row is None:
            assert idempotency_key is not None
            existing = (await conn.execute(
                jobs_db.by_idempotency_key(owner_id, idempotency_key))).one()
            if existing.kind != kind or existing.input != input:
                raise Conflict("This Idempotency-Key was already used with a different request.")
            await release_job_lease(job_id)  # no new job runs
            return existing, False
        if on_submit is not None:
            await on_submit(conn, job_id)
    try:
        await services.enqueuer.send(kind, job_id, announce={"kind": kind})
    except Exception:
        log.exception("enqueue failed; the sweeper will send job %s", job_id)
    return row, True


async def cancel_job(services: Services, job_id: str, owner_id: str,
                     reason: str) -> Row[Any] | None:
    """Mark the job cancelled, raise the flag workers check, then end its event log.

    Returns None when the job is not the owner's or is already finished.
    """
    async with services.engine.begin() as conn:
        row = (await conn.execute(jobs_db.cancel(job_id, owner_id))).first()
    if row is None:
        return None
    await services.events.request_cancel(job_id, row.attempts,
                                         services.settings.event_stream_ttl_s)
    await services.events.publish(job_id, "cancelled", {"reason": reason}, force=True,
                                  terminal=True)
    if row.webhook_url:
        await services.enqueuer.send_to(WEBHOOK_ROUTE, job_id)
    await fire(services, row.owner_id, [("job.cancelled", {
        "job_id": job_id, "kind": row.kind, "status": "cancelled", "reason": reason})])
    return row


async def retry_job(services: Services, job_id: str, owner_id: str) -> Row[Any] | None:
    """Queue a failed or cancelled job again; None when it is not the owner's or not retryable.

    The `queued` event is forced past the cancel flag, which stays up to stop a cancelled
    attempt still winding down; the new attempt's number is above it, so it runs.
    """
    async with services.engine.begin() as conn:
        row = (await conn.execute(jobs_db.requeue_for_retry(job_id, owner_id))).first()
    if row is None:
        return None
    await services.events.publish(job_id, "queued", {"kind": row.kind, "retry": True},
                                  force=True)
    await services.enqueuer.send(row.kind, job_id)
    return row
