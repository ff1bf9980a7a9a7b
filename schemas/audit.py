"""The operators' audit log as `GET /v1/admin/audit` shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEntryRead(BaseModel):
    id: str
    at: datetime
    actor: str = Field(description="Who acted: user id (and key id, when a key was used).")
    actor_id: str | None = Field(default=None, description="The acting user's id.")
    actor_role: str | None = Field(default=None,
                                   description="The acting user's role: admin or operator.")
    action: str = Field(description="job.retry, job.cancel, jobs.bulk_retry, "
                                    "jobs.bulk_cancel, queue.pause, queue.resume, "
                                    "queue.purge_dead_letters")
    target: str = Field(description="The job id or queue name acted on.")
    details: dict[str, Any]


class AuditList(BaseModel):
    data: list[AuditEntryRead]
    next_cursor: str | None
