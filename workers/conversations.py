"""Conversation actors: pruning a long history into a summary."""

from __future__ import annotations

from typing import Any

from pipelines.models import usable
from pipelines.ports import ChatModel
from pipelines.prune import prune
from schemas.conversations import PruneJob
from workers.actors import job_actor
from workers.jobs import Job


@job_actor("prune")
async def prune_conversation(job: Job, spec: PruneJob) -> dict[str, Any]:
    """Publishes started, the summary as delta…, then succeeded with the counts, or failed.

    Safe to re-run: a pruning already recorded for the job is returned, not repeated.
    """
    res = job.resources

    async def chat_model_for(model_id: str) -> ChatModel:
        return res.chat_models.get(usable(await res.models.get(model_id)))

    return await prune(res.aengine, chat_model_for, conversation_id=spec.conversation_id,
                       owner_id=job.owner_id, job_id=job.job_id, keep_last=spec.keep_last,
                       model_id=spec.model, max_summary_tokens=spec.max_summary_tokens,
                       emit=job.emit)
