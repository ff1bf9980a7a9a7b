"""Usage and cost of completed chat jobs: one priced record per job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from pipelines.db import models as models_db
from pipelines.models import ModelInfo
from pipelines.ports import Usage
from pipelines.tokens import count_message_tokens, count_tokens


def local_usage(request: dict[str, Any], content: str) -> Usage:
    """Tokens counted offline, for upstreams that report no usage."""
    model = request.get("model")
    return Usage(prompt_tokens=count_message_tokens(request.get("messages") or [], model),
                 completion_tokens=count_tokens(content, model))


def price_result(info: ModelInfo, result: dict[str, Any]) -> None:
    """Write the completion's cost into `result` at `info`'s prices."""
    usage = result.get("usage") or {}
    result["cost_usd"] = float(info.cost_usd(int(usage.get("prompt_tokens") or 0),
                                             int(usage.get("completion_tokens") or 0)))


def record_chat_usage(conn: Connection, *, job_id: str, owner_id: str, key_id: str | None,
                      info: ModelInfo, result: dict[str, Any]) -> None:
    """Record `result`'s tokens priced at `info`'s prices; a second call for a job is a no-op.

    Also writes the cost into `result`, so the job's result and the usage record agree.
    """
    usage = result.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cost = info.cost_usd(prompt, completion)
    result["cost_usd"] = float(cost)
    conn.execute(*models_db.record_usage(
        job_id=job_id, owner_id=owner_id, key_id=key_id, model=info.id, provider=info.provider,
        prompt_tokens=prompt, completion_tokens=completion,
        duration_ms=result.get("duration_ms"), ttft_ms=result.get("ttft_ms"), cost_usd=cost,
    ))
