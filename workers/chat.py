"""Chat actors."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines import chat, metrics
from pipelines.budgets import budget_id, record_tokens
from pipelines.conversations import message_tokens
from pipelines.db.outcomes import chat_succeeded
from pipelines.models import output_token_limit
from pipelines.usage import local_usage
from schemas.openai import ChatCompletionRequest
from workers.actors import job_actor
from workers.jobs import Job


@job_actor("chat")
async def run_chat(job: Job, spec: ChatCompletionRequest) -> dict[str, Any]:
    """Publishes started, delta…, then succeeded (with the whole completion) or failed.

    A job whose client wants the whole answer (`stream: false` in its input) publishes no
    deltas. The model's fallbacks answer when it is down before its first token. The
    success, its usage record and a conversation's reply are written in one statement.
    Safe to re-run: a finished or cancelled job is skipped; a retry publishes `retry` first.
    """
    res = job.resources
    request = job.input
    chain = await res.models.chain(spec.model)
    candidates = [(info.id, res.chat_models.get(info)) for info in chain]
    by_id = {info.id: info for info in chain}

    def request_for(model_id: str) -> dict[str, Any]:
        # The model's cap bounds the answer (and the result row): an upstream asked for no
        # limit writes until its own. Dev models keep their documented defaults.
        info = by_id[model_id]
        limit = output_token_limit(info, request)
        if info.provider == "dev" or limit is None:
            return request
        field = "max_completion_tokens" if "max_completion_tokens" in request else "max_tokens"
        return request if request.get(field) == limit else {**request, field: limit}

    result = await chat.complete_with_fallbacks(
        candidates, request, job.emit, request_for=request_for,
        flush_ms=chat.flush_window_ms(res.settings.stream_flush_ms,
                                      res.settings.stream_flush_max_ms, res.active_jobs),
        stream_events=bool(request.get("stream", True)), is_cancelled=job.is_cancelled,
        count_tokens=local_usage, providers={info.id: info.provider for info in chain})
    answered = next(info for info in chain if info.id == result["model"])
    usage = result["usage"]
    cost = answered.cost_usd(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
    # Priced now, recorded with the job's success: the result and the record agree.
    result["cost_usd"] = float(cost)
    if res.settings.daily_token_budget > 0:
        await record_tokens(res.aredis, res.keys, budget_id(job.key_id, job.owner_id),
                            usage["total_tokens"])
    conversation_id = spec.conversation_id
    # Here, not in the API: a conversation's reply is kept even if the client hung up.
    reply_tokens = (message_tokens("assistant", result["content"], result["model"])
                    if conversation_id else 0)

    async def finish(conn: AsyncConnection, done: dict[str, Any]) -> Any:
        row = (await conn.execute(*chat_succeeded(
            job_id=job.job_id, attempt=job.attempt, result=done, owner_id=job.owner_id,
            key_id=job.key_id, model=answered.id, provider=answered.provider, cost_usd=cost,
            conversation_id=conversation_id, reply_tokens=reply_tokens))).first()
        if row is not None:  # Counted once, by the attempt that recorded the success.
            metrics.record_chat(answered.id, answered.provider, done, float(cost))
        return row

    job.finish = finish
    return result
