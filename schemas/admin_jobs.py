"""What operators see of jobs: every owner's jobs, and counts and run times across them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.jobs import JobRead, JobSummary


class AdminJobRead(JobRead):
    """A job as an operator sees it: with its owner, which owners' own view leaves out."""

    owner_id: str


class AdminJobSummary(JobSummary):
    """A job in the operators' listing: its state and owner, without input and result."""

    owner_id: str


class AdminJobList(BaseModel):
    data: list[AdminJobSummary]
    next_cursor: str | None


class JobCount(BaseModel):
    total: int = Field(description="All jobs ever recorded.")
    last_hour: int = Field(description="Jobs created in the window, by current state.")


class RunTimes(BaseModel):
    """Run time (`finished_at - started_at`) of jobs that succeeded in the window."""

    count: int
    p50_s: float | None = None
    p95_s: float | None = None


class JobStats(BaseModel):
    window_s: int
    overall: JobCount
    by_status: dict[str, JobCount] = Field(description="Every status, zeros included.")
    by_kind: dict[str, JobCount]
    succeeded_run_time: RunTimes
