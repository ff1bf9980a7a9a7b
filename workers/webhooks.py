"""Webhook delivery: one message per finished job that has a `webhook_url`."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from pipelines import webhooks
from pipelines.db import jobs as jobs_db
from pipelines.errors import UrlNotAllowed
from pipelines.outbound import OutboundPolicy
from schemas.jobs import WEBHOOK_ROUTE
from workers.resources import current

log = logging.getLogger("switchyard.webhooks")


@dramatiq.actor(actor_name=WEBHOOK_ROUTE.actor_name, queue_name=WEBHOOK_ROUTE.queue_name,
                max_retries=8, min_backoff=1_000, max_backoff=300_000)
def deliver_webhook(job_id: str) -> None:
    """POSTs the job as it is now; retried with backoff while the receiver is unreachable.

    The URL is checked again here (its DNS answer may have changed since submission) and
    the request goes to the checked address; a refused URL is logged and not retried.
    Safe to re-run: receivers get the same body (dedupe on `id` + `status`).
    """
    res = current()
    with res.autocommit.connect() as conn:
        row = conn.execute(*jobs_db.get_any(job_id)).first()
    if row is None or not row.webhook_url:
        return
    settings = res.settings
    try:
        webhooks.deliver(row.webhook_url, job_payload(row),
                         settings.webhook_secret.get_secret_value(),
                         policy=OutboundPolicy.of(settings.outbound_allow_private,
                                                  settings.outbound_allowed_hosts),
                         timeout_s=settings.webhook_timeout_s)
    except UrlNotAllowed as exc:
        log.warning("webhook of job %s not delivered: %s", job_id, exc.message)


def job_payload(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "kind": row.kind, "status": row.status,
            "attempts": row.attempts, "result": row.result, "error": row.error,
            "created_at": row.created_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None}
