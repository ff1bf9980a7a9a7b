"""Compare actor: one prompt on several models at once."""

from __future__ import annotations

from typing import Any

import dramatiq
from pydantic import ValidationError

from pipelines.compare import compare
from pipelines.errors import DomainError, InvalidInput, ModelNotFound
from pipelines.models import usable
from pipelines.ports import ChatModel
from schemas.compare import CompareRequest
from schemas.jobs import JOB_ROUTES
from workers.jobs import JobContext, execute

_ROUTE = JOB_ROUTES["compare"]


@dramatiq.actor(actor_name=_ROUTE.actor_name, queue_name=_ROUTE.queue_name,
                max_retries=10, throws=(DomainError,), time_limit=3_600_000)
def run_compare(job_id: str) -> None:
    """Publishes started, per model step_started / delta… / step_completed (each tagged with
    `model` and `index`), then succeeded with every model's result.

    Safe to re-run: a finished or cancelled job is skipped; a retry publishes `retry` first
    and asks every model again.
    """

    def work(ctx: JobContext) -> dict[str, Any]:
        res = ctx.resources
        try:
            spec = CompareRequest.model_validate(ctx.input)
        except ValidationError as exc:
            # A job made through POST /v1/jobs with a bad input: final, not worth a retry.
            raise InvalidInput(f"Invalid {ctx.kind} input: {exc.errors()[0]['msg']}") from None

        def chat_model_for(model_id: str) -> ChatModel:
            # No fallbacks here: a comparison must report the model it was asked about.
            return res.chat_models.get(usable(res.models.get(model_id)))

        def prices_for(model_id: str) -> tuple[float, float] | None:
            try:
                info = res.models.get(model_id)
            except ModelNotFound:
                return None
            return info.input_price_per_mtok, info.output_price_per_mtok

        return compare(spec.job_input(), chat_model_for, ctx.emit, prices_for=prices_for,
                       flush_ms=res.settings.stream_flush_ms)

    execute(job_id, work)
