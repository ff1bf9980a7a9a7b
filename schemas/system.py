"""What the probes and the operators' system routes answer (the STING seed's shapes)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

ServiceState = Literal["healthy", "unhealthy"]
HealthStatus = Literal["healthy", "degraded", "unhealthy"]


class Health(BaseModel):
    """`GET /health`: always 200 while the process serves; `status` says how it is."""

    status: HealthStatus = Field(
        description="healthy: every service answers; degraded: no live worker; "
                    "unhealthy: Postgres or Redis does not answer.")
    timestamp: dt.datetime
    services: dict[str, ServiceState] = Field(
        description="database, redis, workers (at least one live worker process).")
    version: str
    uptime: float = Field(description="Seconds since this API process started.")


class RequestMetrics(BaseModel):
    total_today: int = Field(description="HTTP requests since 00:00 UTC, every API process.")
    average_response_time: float = Field(description="Mean seconds per request today.")
    error_rate: float = Field(description="Share of today's requests answered 5xx.")


class ModelMetrics(BaseModel):
    total_inferences: int = Field(description="Chat completions recorded since 00:00 UTC.")
    average_inference_time: float | None = Field(
        description="Mean seconds per chat completion today (none yet: null).")
    active_models: list[str] = Field(description="Models that answered today.")


class PerformanceMetrics(BaseModel):
    cpu_usage: float = Field(description="1-minute load average per core, as a percentage.")
    memory_usage: float = Field(description="This API process's peak resident memory, MiB.")
    disk_usage: float = Field(description="Used share of the working directory's disk, %.")


class SystemMetrics(BaseModel):
    """`GET /v1/system/metrics` (admin)."""

    performance: PerformanceMetrics
    requests: RequestMetrics
    models: ModelMetrics
