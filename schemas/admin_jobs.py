"""What operators see of jobs: every owner's jobs, and counts and run times across them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.jobs import JobRead, JobStatus, JobSummary


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


class JobFilterBody(BaseModel):
    """Which jobs an operator means (every field optional; all that are given must hold)."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    kind: str | None = Field(default=None, max_length=100)
    owner_id: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200,
                              description="The model a chat job's input names.")
    queue: str | None = Field(default=None, max_length=100,
                              description="Jobs of the kinds sent to this queue.")
    created_from: datetime | None = None
    created_to: datetime | None = None
    error: str | None = Field(default=None, max_length=500,
                              description="Text in the error's message or code.")
    code: str | None = Field(default=None, max_length=100, description="The error's code.")
    signature: str | None = Field(default=None, max_length=2000,
                                  description="A failure group's signature (see failures).")

    @field_validator("kind", "owner_id", "model", "queue", "error", "code", "signature")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # Postgres text cannot hold NUL: refuse it here rather than fail in the query.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    @field_validator("created_from", "created_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A naive time is UTC (the database compares instants)."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class FailureGroup(BaseModel):
    """Failed jobs with one error code and message signature (numbers and ids as `#`)."""

    code: str
    signature: str
    count: int
    kinds: list[str]
    first_at: datetime | None
    last_at: datetime | None
    example: str | None = Field(description="One of the group's messages as written.")


class FailureGroupList(BaseModel):
    data: list[FailureGroup]


class JobBulkAction(BaseModel):
    """Retry or cancel every job a filter matches (at most `limit`). Retry takes only
    failed or cancelled jobs, cancel only queued or running ones. `dry_run` only counts:
    the dashboard shows that count and asks before acting."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "cancel"]
    filter: JobFilterBody = Field(default_factory=JobFilterBody)
    dry_run: bool = False
    limit: int = Field(default=500, ge=1, le=1000)


class JobBulkResult(BaseModel):
    action: Literal["retry", "cancel"]
    dry_run: bool
    matched: int = Field(description="Jobs the filter matches that the action applies to.")
    changed: int = Field(description="Jobs retried or cancelled (0 on a dry run).")
    job_ids: list[str] = Field(description="The jobs changed (a dry run: would change).")


class AttemptRead(BaseModel):
    """One delivery of a job a worker claimed: which worker process ran it, when, and how
    it ended (the `job_attempts` table; jobs from before it have none)."""

    attempt: int
    worker: str | None = Field(default=None, description="The worker's id, `host:pid` (as "
                                                         "on the workers panel).")
    worker_id: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: datetime
    ended_at: datetime | None = None
    duration_s: float | None = None
    outcome: str | None = Field(default=None,
                                description="succeeded, failed, cancelled, retried (the "
                                            "broker ran it again) or lost (its worker died "
                                            "and a later delivery took over); null while "
                                            "running.")
    error: dict[str, Any] | None = Field(default=None,
                                         description="Why a failed or retried attempt "
                                                     "ended: {code, message}.")


class EventRead(BaseModel):
    id: str
    type: str
    at: datetime
    data: dict[str, Any]


class AdminJobDetail(BaseModel):
    """A job with its input, result and error, every attempt, and its event log (as kept:
    the log expires some hours after the job ends)."""

    job: AdminJobRead
    attempts: list[AttemptRead]
    events: list[EventRead]
    events_truncated: bool
