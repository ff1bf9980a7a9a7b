"""A job that does nothing: measures the queue itself and proves a worker is alive."""

from __future__ import annotations

import dramatiq

from pipelines.errors import DomainError
from schemas.jobs import JOB_ROUTES
from workers.jobs import JobContext, execute

_ROUTE = JOB_ROUTES["noop"]


@dramatiq.actor(actor_name=_ROUTE.actor_name, queue_name=_ROUTE.queue_name,
                max_retries=10, throws=(DomainError,))
def run_noop(job_id: str) -> None:
    """Publishes started then succeeded with the input echoed back. Safe to re-run."""

    def work(ctx: JobContext) -> dict:
        return {"echo": ctx.input}

    execute(job_id, work)
