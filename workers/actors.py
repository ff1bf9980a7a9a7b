"""The one way to declare a job actor: its kind, and the work to do with a validated payload.

    @job_actor("compare")
    async def run_compare(job: Job, spec: CompareRequest) -> dict[str, Any]: ...

The kind names the actor and its queue (`schemas.jobs.JOB_ROUTES`, which the API enqueues
by) and the payload model (`schemas.job_kinds.JOB_PAYLOADS`, which `POST /v1/jobs` checks at
the edge). The scaffold validates the stored input with that model (an invalid input fails
the job with VALIDATION_FAILED, never retried), runs the lifecycle of `workers/jobs.py` and
publishes. `async def` work runs on the process's event loop, many jobs at once; plain
`def` work is CPU-bound and runs in a thread with a `SyncJob`, so it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import dramatiq
from pydantic import BaseModel, ValidationError

from pipelines.errors import DomainError, InvalidInput
from schemas.job_kinds import JOB_PAYLOADS
from schemas.jobs import JOB_ROUTES
from workers.jobs import Job, SyncJob, run

HOUR_MS = 3_600_000


JobActor = dramatiq.Actor[[str], None]


def job_actor(kind: str, *, max_retries: int = 10,
              time_limit_ms: int = HOUR_MS) -> Callable[[Callable[..., Any]], JobActor]:
    """Register `work(job, spec)` as the actor of `kind` (see the module docstring)."""
    route = JOB_ROUTES[kind]
    payload = JOB_PAYLOADS[kind]

    def register(work: Callable[..., Any]) -> JobActor:
        threaded = not inspect.iscoroutinefunction(work)

        async def attempt(job: Job) -> Any:
            spec = _validated(payload, kind, job.input)
            if threaded:
                return await asyncio.to_thread(work, SyncJob(job, asyncio.get_running_loop()),
                                               spec)
            return await work(job, spec)

        async def actor(job_id: str) -> None:
            await run(job_id, attempt)

        actor.__name__ = actor.__qualname__ = work.__name__
        actor.__doc__ = work.__doc__
        declare = dramatiq.actor(actor_name=route.actor_name, queue_name=route.queue_name,
                                 max_retries=max_retries, throws=(DomainError,),
                                 time_limit=time_limit_ms)
        return declare(actor)

    return register


def _validated(payload: type[BaseModel] | None, kind: str, data: dict[str, Any]) -> Any:
    if payload is None:
        return data
    try:
        return payload.model_validate(data)
    except ValidationError as exc:
        # A job made through POST /v1/jobs before its kind was checked at the edge, or an
        # input from an older release: final, not worth a retry.
        raise InvalidInput(f"Invalid {kind} input: {exc.errors()[0]['msg']}") from None
