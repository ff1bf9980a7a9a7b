"""Webhook delivery: one message per finished job that has a `webhook_url`."""

from __future__ import annotations

from typing import Any

import dramatiq

from pipelines import webhooks
from pipelines.db import jobs as jobs_db
from schemas.jobs import WEBHOOK_ROUTE
from workers.resources import current


@dramatiq.actor(actor_name=WEBHOOK_ROUTE.actor_name, queue_name=WEBHOOK_ROUTE.queue_name,
                max_retries=8, min_backoff=1_000, max_backoff=300_000)
def deliver_webhook(job_id: str) -> None:
    """POSTs the job as it is now; retried with backoff while the receiver is unreachable.

    Safe to re-run: receivers get the same body (dedupe on `id` + `status`).
    """
    res = current()
    with res.autocommit.connect() as conn:
        row = conn.execute(*jobs_db.get_any(job_id)).first()
    if row is None or not row.webhook_url:
        return
    webhooks.deliver(row.webhook_url, job_payload(row),
                     res.settings.webhook_secret.get_secret_value(),
                     timeout_s=res.settings.webhook_timeout_s)


def job_payload(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "kind": row.kind, "status": row.status,
            "attempts": row.attempts, "result": row.result, "error": row.error,
            "created_at": row.created_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None}
