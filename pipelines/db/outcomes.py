"""The statement that ends a successful chat job, in one round trip.

A chat job's success is three writes that must agree: the job row (status, result), its
usage record (tokens and cost, once per job) and, for a conversation turn, the assistant's
reply; the attempt's row is finished too, as in every terminal statement. As separate
statements in a transaction that is BEGIN + 3 + COMMIT round trips on every completion; as
data-modifying CTEs it is one statement, atomic by itself. The usage and reply are written
only if the job's UPDATE matched (the attempt still owns the job), so a stale attempt
writes nothing, and a redelivered job conflicts on the unique indexes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

_DONE = """
WITH done AS (
    UPDATE jobs
       SET status = 'succeeded', result = :result, progress = 1.0, error = NULL,
           updated_at = now(), finished_at = now()
     WHERE id = :job_id AND status = 'running' AND attempts = :attempt
 RETURNING id, webhook_url
), attempt_ended AS (
    UPDATE job_attempts SET finished_at = now(), outcome = 'succeeded'
      FROM done
     WHERE job_attempts.job_id = done.id AND job_attempts.attempt = :attempt
), usage AS (
    INSERT INTO usage_records (job_id, owner_id, key_id, model, provider, prompt_tokens,
                               completion_tokens, duration_ms, ttft_ms, cost_usd)
    -- Parameters in a SELECT list take no type from the INSERT's columns: cast each.
    SELECT done.id, CAST(:owner_id AS text), CAST(:key_id AS text), CAST(:model AS text),
           CAST(:provider AS text), CAST(:prompt_tokens AS integer),
           CAST(:completion_tokens AS integer), CAST(:duration_ms AS double precision),
           CAST(:ttft_ms AS double precision), CAST(:cost_usd AS numeric)
      FROM done
        ON CONFLICT (job_id) DO NOTHING
)"""

_REPLY = """, reply AS (
    INSERT INTO conversation_messages (conversation_id, role, content, tokens, job_id)
    SELECT CAST(:conversation_id AS uuid), 'assistant', CAST(:content AS text),
           CAST(:tokens AS integer), done.id
      FROM done
     WHERE EXISTS (SELECT 1 FROM conversations
                    WHERE id = CAST(:conversation_id AS uuid)
                      AND owner_id = CAST(:owner_id AS text))
       AND EXISTS (SELECT 1 FROM conversation_messages
                    WHERE conversation_id = CAST(:conversation_id AS uuid)
                      AND job_id = done.id)
        ON CONFLICT (job_id) WHERE role = 'assistant' AND job_id IS NOT NULL DO NOTHING
 RETURNING conversation_id
), touched AS (
    UPDATE conversations SET updated_at = now()
     WHERE id IN (SELECT conversation_id FROM reply)
)"""

_SELECT = "\nSELECT id, webhook_url FROM done"


def _prepared(sql: str) -> TextClause:
    return text(sql).bindparams(bindparam("result", type_=JSONB))


_CHAT_SUCCEEDED = _prepared(_DONE + _SELECT)
_CHAT_SUCCEEDED_WITH_REPLY = _prepared(_DONE + _REPLY + _SELECT)


def chat_succeeded(*, job_id: str, attempt: int, result: dict[str, Any], owner_id: str,
                   key_id: str | None, model: str, provider: str, cost_usd: Decimal,
                   conversation_id: str | None = None, reply_tokens: int = 0,
                   ) -> tuple[TextClause, dict[str, Any]]:
    """Mark the job succeeded, record its usage and (with a conversation) its reply.

    Returns the (statement, parameters) pair; the statement yields the job's id and
    webhook_url when this attempt finished it, and no row otherwise.
    """
    usage = result.get("usage") or {}
    values: dict[str, Any] = {
        "job_id": job_id, "attempt": attempt, "result": result, "owner_id": owner_id,
        "key_id": key_id, "model": model, "provider": provider,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "duration_ms": result.get("duration_ms"), "ttft_ms": result.get("ttft_ms"),
        "cost_usd": cost_usd,
    }
    if conversation_id is None:
        return _CHAT_SUCCEEDED, values
    values.update(conversation_id=conversation_id, content=str(result.get("content") or ""),
                  tokens=reply_tokens)
    return _CHAT_SUCCEEDED_WITH_REPLY, values
