"""Seeding the model registry at start-up from provider keys and an optional models file.

Idempotent: a seed inserts a model or refreshes one that is still as seeded (a rotated key
or a changed file takes effect on restart), but never touches a row an admin created or
edited. Every API replica seeds; the upsert makes that safe.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.db import models as models_db
from pipelines.errors import InvalidInput
from pipelines.secretbox import SecretBox
from schemas.models import ModelCreate, ModelFields

# A small default set per provider: cheap, fast models that exist on the public APIs.
DEFAULT_OPENAI_MODELS: tuple[dict[str, Any], ...] = (
    {"id": "gpt-4o-mini", "upstream_model": "gpt-4o-mini", "context_window": 128_000,
     "capabilities": ["chat", "streaming", "tools", "vision"], "max_output_tokens": 16_384,
     "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.60},
    {"id": "gpt-4o", "upstream_model": "gpt-4o", "context_window": 128_000,
     "capabilities": ["chat", "streaming", "tools", "vision"], "max_output_tokens": 16_384,
     "input_price_per_mtok": 2.50, "output_price_per_mtok": 10.00},
)
DEFAULT_ANTHROPIC_MODELS: tuple[dict[str, Any], ...] = (
    {"id": "claude-3-5-haiku-latest", "upstream_model": "claude-3-5-haiku-latest",
     "context_window": 200_000, "capabilities": ["chat", "streaming", "tools"],
     "max_output_tokens": 8_192, "input_price_per_mtok": 0.80, "output_price_per_mtok": 4.00},
    {"id": "claude-sonnet-4-0", "upstream_model": "claude-sonnet-4-0",
     "context_window": 200_000, "capabilities": ["chat", "streaming", "tools", "vision"],
     "max_output_tokens": 64_000, "input_price_per_mtok": 3.00,
     "output_price_per_mtok": 15.00},
)
_ENTRIES = TypeAdapter(list[ModelCreate])


def load_models_file(path: str | Path) -> list[ModelCreate]:
    """The models in a JSON list or a TOML file of `[[models]]` tables; errors are loud."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text).get("models", [])
        else:
            data = json.loads(text)
            data = data.get("models", []) if isinstance(data, dict) else data
        return _ENTRIES.validate_python(data)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"models file {path} is not usable: {exc}") from exc


def seed_specs(*, openai_api_key: str | None, openai_base_url: str | None,
               anthropic_api_key: str | None, anthropic_base_url: str | None,
               models_file: str | None) -> list[ModelCreate]:
    """What to seed: the default set of each provider with a key, then the file's models."""
    specs: list[ModelCreate] = []
    if openai_api_key:
        specs += [ModelCreate.model_validate({**entry, "provider": "openai",
                                              "api_key": openai_api_key,
                                              "base_url": openai_base_url})
                  for entry in DEFAULT_OPENAI_MODELS]
    if anthropic_api_key:
        specs += [ModelCreate.model_validate({**entry, "provider": "anthropic",
                                              "api_key": anthropic_api_key,
                                              "base_url": anthropic_base_url})
                  for entry in DEFAULT_ANTHROPIC_MODELS]
    if models_file:
        by_id = {spec.id: spec for spec in specs}
        for spec in load_models_file(models_file):
            by_id[spec.id] = spec  # the file overrides a default of the same id
        specs = list(by_id.values())
    return specs


def row_values(spec: ModelFields, box: SecretBox, *, fields: set[str] | None = None
               ) -> dict[str, Any]:
    """Column values for `spec` (only `fields`, if given), with the key sealed."""
    data = spec.model_dump(include=fields, exclude={"id"})
    if "api_key" in data:
        key = spec.api_key.get_secret_value() if spec.api_key else None
        data["api_key"] = box.seal(key) if key else None
    return {name: value for name, value in data.items() if name in models_db.MODEL_FIELDS}


async def seed_models(engine: AsyncEngine, box: SecretBox, specs: list[ModelCreate]) -> int:
    """Upsert `specs` as seeded models; returns how many rows were written."""
    written = 0
    async with engine.begin() as conn:
        for spec in specs:
            result = await conn.execute(models_db.seed_model(spec.id, row_values(spec, box)))
            written += result.rowcount or 0
    return written
