"""Usage and cost reports: `GET /v1/usage` and the token part of `GET /v1/admin/usage`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class UsageTotals(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class UsageGroup(UsageTotals):
    """Totals for one model, day (UTC, `YYYY-MM-DD`), owner or key."""

    key: str | None


class TokenUsageReport(BaseModel):
    """Completed chat jobs' tokens and cost within [from, to)."""

    model_config = ConfigDict(serialize_by_alias=True)

    from_: datetime | None = Field(default=None, serialization_alias="from")
    to: datetime | None = None
    total: UsageTotals
    by_model: list[UsageGroup]
    by_day: list[UsageGroup]
    by_owner: list[UsageGroup] | None = None
    by_key: list[UsageGroup] | None = None
