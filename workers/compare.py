"""Compare actor: one prompt on several models at once."""

from __future__ import annotations

from typing import Any

from pipelines.compare import compare
from pipelines.errors import ModelNotFound
from pipelines.models import usable
from pipelines.ports import ChatModel
from schemas.compare import CompareRequest
from workers.actors import job_actor
from workers.jobs import Job


@job_actor("compare")
async def run_compare(job: Job, spec: CompareRequest) -> dict[str, Any]:
    """Publishes started, per model step_started / delta… / step_completed (each tagged with
    `model` and `index`), then succeeded with every model's result.

    Safe to re-run: a finished or cancelled job is skipped; a retry publishes `retry` first
    and asks every model again.
    """
    res = job.resources
    prices: dict[str, tuple[float, float]] = {}
    caps: dict[str, int] = {}
    for model_id in spec.models:
        try:
            info = await res.models.get(model_id)
        except ModelNotFound:
            continue
        prices[model_id] = (info.input_price_per_mtok, info.output_price_per_mtok)
        if info.provider != "dev" and info.max_output_tokens is not None:
            caps[model_id] = info.max_output_tokens

    async def chat_model_for(model_id: str) -> ChatModel:
        # No fallbacks here: a comparison must report the model it was asked about.
        return res.chat_models.get(usable(await res.models.get(model_id)))

    return await compare(spec.job_input(), chat_model_for, job.emit, prices_for=prices.get,
                         caps=caps, flush_ms=res.settings.stream_flush_ms)
