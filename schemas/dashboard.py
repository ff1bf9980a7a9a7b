"""What the operator dashboard reads besides the admin routes it shares with scripts: the
live feed's ticket, per-minute queue history, and per-model traffic."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LiveTicket(BaseModel):
    ticket: str = Field(description="Pass as `?ticket=` to GET /v1/admin/live (EventSource "
                                    "cannot send an Authorization header).")
    expires_in: int = Field(description="Seconds the ticket opens (or reopens) the feed for.")
    url: str = Field(description="The feed's URL with the ticket.")


class QueueHistory(BaseModel):
    """One queue's minutes, aligned with `QueueHistoryList.minutes` (oldest first)."""

    name: str
    finished: list[int] = Field(description="Jobs that ended in each minute.")
    succeeded: list[int]
    failed: list[int]
    cancelled: list[int]
    run_p50_s: list[float | None] = Field(
        description="Median run time (finished - started) of the minute's jobs.")
    run_p95_s: list[float | None]
    wait_p50_s: list[float | None] = Field(
        description="Median queue wait (started - enqueued) of the minute's jobs.")
    wait_p95_s: list[float | None]


class QueueHistoryList(BaseModel):
    minutes: list[datetime] = Field(description="Start of each one-minute bucket (UTC).")
    queues: list[QueueHistory]


class ModelTraffic(BaseModel):
    id: str
    provider: str | None = None
    enabled: bool | None = Field(default=None, description="None: not in the registry.")
    source: str | None = None
    status: str = Field(description="enabled, disabled, unregistered, or a deployment model's "
                                    "runtime status (loaded, …).")
    deployment: dict[str, object] | None = Field(
        default=None, description="The deployment serving this model: id, name, state, "
                                  "state_message, estimated_hourly_cost, cost_accrued_usd.")
    requests_1h: int = 0
    requests_24h: int = 0
    errors_1h: int = 0
    errors_24h: int = 0
    completions_24h: int = 0
    prompt_tokens_24h: int = 0
    completion_tokens_24h: int = 0
    cost_usd_24h: float = 0.0
    avg_ms_24h: float | None = None
    avg_ttft_ms_24h: float | None = None


class ModelTrafficList(BaseModel):
    data: list[ModelTraffic]
