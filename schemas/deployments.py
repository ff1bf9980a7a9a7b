"""Deployments: bodies of `/v1/deployments`, the `deploy` job payload and the lifecycle states."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeploymentState(StrEnum):
    """`pending → provisioning → starting → running ⇄ unhealthy → stopping → stopped | failed`."""

    pending = "pending"
    provisioning = "provisioning"
    starting = "starting"
    running = "running"
    unhealthy = "unhealthy"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


# What a deployment's model shows as `status` in /v1/models, per deployment state.
MODEL_STATUS: dict[str, str] = {
    "pending": "loading", "provisioning": "loading", "starting": "loading",
    "running": "loaded", "unhealthy": "unhealthy", "stopping": "unloading",
    "stopped": "available", "failed": "unhealthy",
}

# The model-status WebSocket frame a state change becomes (STING's channel `model_status`).
MODEL_STATUS_FRAMES: dict[str, str] = {
    "provisioning": "model_loading", "starting": "model_loading", "running": "model_loaded",
    "unhealthy": "model_unhealthy", "stopping": "model_unloading",
    "stopped": "model_unloaded", "failed": "model_failed",
}

_MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$"


class EndpointTarget(BaseModel):
    """An OpenAI-compatible server that already runs (vLLM, Ollama, llama.cpp, Switchyard)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["endpoint"]
    base_url: str = Field(min_length=1, max_length=2000,
                          description="Its OpenAI base URL, e.g. http://host:8000/v1")
    api_key: str | None = Field(default=None, max_length=4000, description="Write-only.")
    keep_alive: str | int | None = Field(
        default=None, description="An Ollama server: starting (load) warms the model with "
        "this keep_alive (e.g. '30m', -1) and stopping (unload) evicts it (keep_alive 0).")


class ProcessTarget(BaseModel):
    """A model server command launched and supervised on a deploy worker's host.

    `{port}` and `{host}` in the command or env are replaced by the chosen port and bind
    address; the port is also in the child's `PORT` variable.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["process"]
    command: list[str] = Field(min_length=1, max_length=200)
    port: int | Literal["auto"] = "auto"
    host: str = Field(default="127.0.0.1", max_length=255)
    health_path: str = Field(default="/v1/models", max_length=500)
    env: dict[str, str] = Field(default_factory=dict, max_length=200)
    working_dir: str | None = Field(default=None, max_length=4000)

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            import shlex

            return shlex.split(value)
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError("port must be 1-65535 or 'auto'")
        return value

    @field_validator("health_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("health_path must start with /")
        return value

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        if any("\x00" in part or not part for part in value):
            raise ValueError("command parts must be non-empty and without NUL")
        return value


Target = Annotated[EndpointTarget | ProcessTarget, Field(discriminator="type")]


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(pattern=_MODEL_ID, description="The id it gets in the model registry.")
    upstream_model: str | None = Field(default=None, min_length=1, max_length=500,
                                       description="The name sent to its server (default: model).")
    target: Target
    estimated_hourly_cost: float = Field(default=0.0, ge=0, le=1_000_000)
    context_window: int = Field(default=8192, ge=1, le=100_000_000)
    description: str = Field(default="", max_length=2000)
    fallbacks: list[str] = Field(default_factory=list, max_length=20,
                                 description="Models that answer while it is not running.")
    start: bool = Field(default=True, description="Start it now (else it waits, stopped).")


class DeployJob(BaseModel):
    """The `deploy` job: take a deployment to the state `action` asks for, then report it."""

    model_config = ConfigDict(extra="forbid")

    deployment_id: str
    action: Literal["start", "stop", "restart", "delete"] = "start"


class HealthRead(BaseModel):
    last_check_at: datetime | None = None
    latency_ms: float | None = None
    consecutive_failures: int = 0


class FailureRead(BaseModel):
    reason: str
    at: datetime


class DeploymentRead(BaseModel):
    id: str
    name: str
    model: str
    upstream_model: str
    target: dict[str, Any]
    state: DeploymentState
    desired_state: Literal["running", "stopped"]
    state_message: str | None = None
    model_status: str
    restart_count: int
    first_failure: FailureRead | None = None
    health: HealthRead
    host: str | None = None
    pid: int | None = None
    port: int | None = None
    base_url: str | None = None
    uptime_s: float | None = None
    estimated_hourly_cost: float
    cost_so_far: float
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    links: dict[str, str]


class DeploymentList(BaseModel):
    data: list[DeploymentRead]
