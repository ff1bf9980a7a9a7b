"""The model registry's admin bodies and views. The upstream key is write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Provider = Literal["openai", "anthropic", "dev"]
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


def _check_base_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("base_url must be an http:// or https:// URL")
    return value.rstrip("/") if value else value


class ModelFields(BaseModel):
    """What an admin may set on a model; every field optional, as in an update."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider | None = None
    upstream_model: str | None = Field(default=None, min_length=1, max_length=256)
    base_url: str | None = Field(default=None, max_length=2048)
    # SecretStr so the key never shows up in a repr, a log line or a validation error.
    api_key: SecretStr | None = None
    context_window: int | None = Field(default=None, ge=1, le=100_000_000)
    capabilities: list[str] | None = Field(default=None, max_length=32)
    input_price_per_mtok: float | None = Field(default=None, ge=0, le=1_000_000)
    output_price_per_mtok: float | None = Field(default=None, ge=0, le=1_000_000)
    fallbacks: list[str] | None = Field(default=None, max_length=8)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    # Most output tokens one request may ask for; null: no cap of our own. Requests over it
    # are refused with 400, and requests without max_tokens get it (pipelines/models.py).
    max_output_tokens: int | None = Field(default=None, ge=1, le=100_000_000)
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=2000)

    _base_url = field_validator("base_url")(_check_base_url)


class ModelUpdate(ModelFields):
    """`PUT /v1/admin/models/{id}`: fields left out keep their value; `api_key: null` clears."""


class ModelCreate(ModelFields):
    """`POST /v1/admin/models` (and one entry of the models file)."""

    id: str = Field(min_length=1, max_length=256, pattern=MODEL_ID_PATTERN)
    provider: Provider
    upstream_model: str = Field(min_length=1, max_length=256)
    context_window: int = Field(default=8192, ge=1, le=100_000_000)
    capabilities: list[str] = Field(
        default_factory=lambda: ["chat", "streaming"], max_length=32)
    input_price_per_mtok: float = Field(default=0, ge=0, le=1_000_000)
    output_price_per_mtok: float = Field(default=0, ge=0, le=1_000_000)
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    enabled: bool = True
    description: str = Field(default="", max_length=2000)


class ModelRead(BaseModel):
    """An admin's view of a registry model: everything but the key itself."""

    id: str
    provider: str
    upstream_model: str
    base_url: str | None
    has_api_key: bool
    context_window: int
    capabilities: list[str]
    input_price_per_mtok: float
    output_price_per_mtok: float
    fallbacks: list[str]
    timeout_s: float | None
    max_output_tokens: int | None
    enabled: bool
    description: str
    source: str
    created_at: datetime | None
    updated_at: datetime | None


class ModelList(BaseModel):
    data: list[ModelRead]
