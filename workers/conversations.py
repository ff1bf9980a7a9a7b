"""Conversation actors: pruning a long history into a summary."""

from __future__ import annotations

from typing import Any

import dramatiq
from pydantic import ValidationError

from pipelines.errors import DomainError, InvalidInput
from pipelines.models import usable
from pipelines.ports import ChatModel
from pipelines.prune import prune
from schemas.conversations import PruneJob
from schemas.jobs import JOB_ROUTES
from workers.jobs import JobContext, execute

_ROUTE = JOB_ROUTES["prune"]


@dramatiq.actor(actor_name=_ROUTE.actor_name, queue_name=_ROUTE.queue_name,
                max_retries=10, throws=(DomainError,), time_limit=3_600_000)
def prune_conversation(job_id: str) -> None:
    """Publishes started, the summary as delta…, then succeeded with the counts, or failed.

    Safe to re-run: a pruning already recorded for the job is returned, not repeated.
    """

    def work(ctx: JobContext) -> dict[str, Any]:
        res = ctx.resources
        try:
            spec = PruneJob.model_validate(ctx.input)
        except ValidationError as exc:
            # A job made through POST /v1/jobs with a bad input: final, not worth a retry.
            raise InvalidInput(f"Invalid {ctx.kind} input: {exc.errors()[0]['msg']}") from None

        def chat_model_for(model_id: str) -> ChatModel:
            return res.chat_models.get(usable(res.models.get(model_id)))

        return prune(res.engine, chat_model_for, conversation_id=spec.conversation_id,
                     owner_id=ctx.owner_id, job_id=ctx.job_id, keep_last=spec.keep_last,
                     model_id=spec.model, max_summary_tokens=spec.max_summary_tokens,
                     emit=ctx.emit)

    execute(job_id, work)
