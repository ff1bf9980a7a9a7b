"""Chains: multi-prompt definitions (AI Studio's "assistant architect"), their runs and steps.

A chain's prompts run by position: every prompt at one position runs in parallel, each as
its own `chain_step` job, and a template sees the inputs and the outputs of prompts at
earlier positions. The hard bounds here only keep a body parseable; the per-deployment
limits (prompts per chain, input fields, input bytes) are settings the route checks.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.fields import EntityId
from schemas.openai import DevOptions

ChainStatus = Literal["draft", "published", "archived"]
FieldType = Literal["text", "short_text", "long_text", "number", "boolean", "select"]
OnError = Literal["fail", "continue"]
RetrievalMode = Literal["vector", "keyword", "hybrid"]

# Bounds of what a body may hold at all; the configured limits are lower.
_MAX_PROMPTS = 200
_MAX_FIELDS = 500
_NAME = r"^[A-Za-z_][A-Za-z0-9_ \-]*$"


class ChainInputField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    type: FieldType = "text"
    required: bool = True
    max_length: int | None = Field(default=None, ge=1)
    description: str | None = Field(default=None, max_length=2000)
    options: list[str] | None = Field(default=None, max_length=200)

    @field_validator("name")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        return value.strip()


class RetrievalSettings(BaseModel):
    """How a step with `knowledge_ids` searches before it runs; hits become `{{context}}`."""

    model_config = ConfigDict(extra="forbid")

    mode: RetrievalMode = "hybrid"
    limit: int = Field(default=5, ge=1, le=50)
    # The query: a template like the prompt's; by default the rendered prompt itself.
    query: str | None = Field(default=None, max_length=10_000)


class ChainPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    position: int = Field(ge=0, le=10_000)
    model: str = Field(min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    template: str = Field(min_length=1, max_length=200_000)
    knowledge_ids: list[EntityId] = Field(default_factory=list, max_length=20)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    retries: int = Field(default=0, ge=0, le=5)
    on_error: OnError = "fail"
    default_output: str = Field(default="", max_length=100_000)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    dev_options: DevOptions | None = None

    @field_validator("name")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        return value.strip()


class ChainCreate(BaseModel):
    """`POST /v1/chains`, and `PUT /v1/chains/{id}` (which makes a new version)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    status: ChainStatus = "draft"
    input_fields: list[ChainInputField] = Field(default_factory=list, max_length=_MAX_FIELDS)
    prompts: list[ChainPrompt] = Field(min_length=1, max_length=_MAX_PROMPTS)

    def definition(self) -> dict[str, Any]:
        """What a version stores and a run renders from."""
        return self.model_dump(mode="json", exclude_none=True)


class ChainSummary(BaseModel):
    id: str
    name: str
    description: str | None
    status: ChainStatus
    version: int
    promptCount: int  # noqa: N815 - AI Studio's field name
    created_at: datetime
    updated_at: datetime


class ChainRead(ChainSummary):
    input_fields: list[dict[str, Any]]
    prompts: list[dict[str, Any]]


class ChainList(BaseModel):
    data: list[ChainSummary]
    next_cursor: str | None


class ChainRunRequest(BaseModel):
    """`POST /v1/chains/{id}/run`."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False


class ChainResumeRequest(BaseModel):
    """`POST /v1/chains/runs/{run_id}/resume`."""

    model_config = ConfigDict(extra="forbid")

    stream: bool = False


class ChainRerunRequest(BaseModel):
    """`POST /v1/chains/runs/{run_id}/rerun`: a new run reusing the outputs before a step."""

    model_config = ConfigDict(extra="forbid")

    from_prompt: str | int
    inputs: dict[str, Any] | None = None
    stream: bool = False


class ChainRunJob(BaseModel):
    """The input of a `chain` job: the run's rows hold the rest (version, inputs, steps)."""

    model_config = ConfigDict(extra="forbid")

    chain_id: EntityId
    version: int = Field(ge=1)


class ChainStepJob(BaseModel):
    """The input of a `chain_step` job: one prompt of one run."""

    model_config = ConfigDict(extra="forbid")

    run_id: EntityId
    step_id: EntityId
    # Rendered at dispatch, with the template (the step row keeps that as `input`).
    system_prompt: str | None = None


class ChainStepRead(BaseModel):
    id: str
    prompt_id: int
    name: str
    position: int
    status: str
    job_id: str | None
    input: str | None
    output: str | None
    model: str | None
    tokens: dict[str, int] | None
    cost_usd: Decimal | float | None
    attempts: int
    error: dict[str, Any] | None
    reused: bool
    metadata: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None


class ChainRunSummary(BaseModel):
    id: str
    chain_id: str
    version: int
    status: str
    error: dict[str, Any] | None
    rerun_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class ChainRunRead(ChainRunSummary):
    inputs: dict[str, Any]
    total_tokens: int
    cost_usd: float
    results: list[dict[str, Any]] | None
    steps: list[ChainStepRead]


class ChainRunList(BaseModel):
    data: list[ChainRunSummary]
    next_cursor: str | None
