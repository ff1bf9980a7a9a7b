"""Model comparison: one prompt to 2–4 models at once, and what each one answered."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.openai import DevOptions

MIN_MODELS = 2
MAX_MODELS = 4


class CompareRequest(BaseModel):
    """`POST /v1/compare`; also the input of a `compare` job (without the transport flags)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: str = Field(min_length=1, max_length=1_000_000)
    models: list[str] = Field(min_length=MIN_MODELS, max_length=MAX_MODELS)
    system_prompt: str | None = Field(default=None, max_length=1_000_000)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    dev_options: DevOptions | None = None
    stream: bool = False
    # `async` is a Python keyword, hence the alias.
    async_: bool = Field(default=False, alias="async")

    @field_validator("models")
    @classmethod
    def _distinct_ids(cls, value: list[str]) -> list[str]:
        if any(not model.strip() for model in value):
            raise ValueError("model ids must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("each model may appear only once")
        return value

    def job_input(self) -> dict[str, Any]:
        """What the compare job stores and the worker reads."""
        return self.model_dump(exclude_none=True, exclude={"stream", "async_"})


class ModelTokens(BaseModel):
    prompt: int
    completion: int


class ModelOutcome(BaseModel):
    """One model's answer, or its error; a failing model never fails the comparison."""

    model: str
    response: str
    tokens: ModelTokens
    duration_ms: float
    ttft_ms: float | None
    cost_usd: float
    finish_reason: str | None = None
    error: dict[str, Any] | None = None


class CompareResult(BaseModel):
    """The result of a `compare` job, in the order the models were asked for."""

    prompt: str
    results: list[ModelOutcome]
    duration_ms: float
