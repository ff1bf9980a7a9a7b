"""Chat actors."""

from __future__ import annotations

from typing import Any

import dramatiq

from pipelines import chat
from pipelines.budgets import budget_id, record_tokens_sync
from pipelines.conversations import record_reply
from pipelines.errors import DomainError
from pipelines.usage import local_usage, price_result, record_chat_usage
from schemas.jobs import JOB_ROUTES
from workers.jobs import JobContext, execute

_ROUTE = JOB_ROUTES["chat"]


@dramatiq.actor(actor_name=_ROUTE.actor_name, queue_name=_ROUTE.queue_name,
                max_retries=10, throws=(DomainError,), time_limit=3_600_000)
def run_chat(job_id: str) -> None:
    """Publishes started, delta…, then succeeded (with the whole completion) or failed.

    The model's fallbacks answer when it is down before its first token. A success is
    recorded in `usage_records` once. Safe to re-run: a finished or cancelled job is
    skipped; a retry publishes `retry` first.
    """

    def work(ctx: JobContext) -> dict[str, Any]:
        res = ctx.resources
        chain = res.models.chain(ctx.input["model"])
        candidates = [(info.id, res.chat_models.get(info)) for info in chain]
        result = chat.complete_with_fallbacks(
            candidates, ctx.input, ctx.emit, flush_ms=res.settings.stream_flush_ms,
            count_tokens=local_usage)
        answered = next(info for info in chain if info.id == result["model"])
        # Priced now, recorded with the job's success: the result and the record agree.
        price_result(answered, result)
        if res.settings.daily_token_budget > 0:
            record_tokens_sync(res.redis, res.keys, budget_id(ctx.key_id, ctx.owner_id),
                               result["usage"]["total_tokens"])
        ctx.on_success.append(lambda conn: record_chat_usage(
            conn, job_id=ctx.job_id, owner_id=ctx.owner_id, key_id=ctx.key_id, info=answered,
            result=result))
        if conversation_id := ctx.input.get("conversation_id"):
            # Here, not in the API: the reply is kept even if the client hung up.
            record_reply(res.engine, conversation_id=conversation_id, owner_id=ctx.owner_id,
                         job_id=ctx.job_id, result=result)
        return result

    execute(job_id, work)
