"""Chat actors."""

from __future__ import annotations

import dramatiq

from pipelines import chat, models
from pipelines.errors import DomainError
from schemas.jobs import JOB_ROUTES
from workers.jobs import JobContext, execute

_ROUTE = JOB_ROUTES["chat"]


@dramatiq.actor(actor_name=_ROUTE.actor_name, queue_name=_ROUTE.queue_name,
                max_retries=10, throws=(DomainError,), time_limit=3_600_000)
def run_chat(job_id: str) -> None:
    """Publishes started, delta…, then succeeded (with the whole completion) or failed.

    Safe to re-run: a finished or cancelled job is skipped; a retry publishes `retry` first.
    """

    def work(ctx: JobContext) -> dict:
        model = models.chat_model(ctx.input["model"])
        return chat.complete(model, ctx.input, ctx.emit,
                             flush_ms=ctx.resources.settings.stream_flush_ms)

    execute(job_id, work)
