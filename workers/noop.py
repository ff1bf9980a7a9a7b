"""A job that does nothing: measures the queue itself and proves a worker is alive."""

from __future__ import annotations

from typing import Any

from workers.actors import job_actor
from workers.jobs import Job


@job_actor("noop")
async def run_noop(job: Job, spec: dict[str, Any]) -> dict[str, Any]:
    """Publishes started then succeeded with the input echoed back. Safe to re-run."""
    return {"echo": spec}
