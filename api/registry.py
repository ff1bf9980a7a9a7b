"""The API process's model registry: seeded from settings at start-up, then cached."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.model_seed import seed_models, seed_specs
from pipelines.models import AsyncModelRegistry, dev_models
from pipelines.secretbox import secret_box
from schemas.settings import Settings

log = logging.getLogger("switchyard.api")


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None


async def start_model_registry(settings: Settings, engine: AsyncEngine) -> AsyncModelRegistry:
    """Seed the registry (idempotently) and return this process's cached view of it."""
    box = secret_box(_secret(settings.switchyard_secret_key))
    specs = seed_specs(
        openai_api_key=_secret(settings.openai_api_key),
        openai_base_url=settings.openai_base_url,
        anthropic_api_key=_secret(settings.anthropic_api_key),
        anthropic_base_url=settings.anthropic_base_url,
        models_file=settings.models_file,
    )
    if specs:
        written = await seed_models(engine, box, specs)
        log.info("model registry seeded: %d of %d models written", written, len(specs))
    return AsyncModelRegistry(
        engine, box, ttl_s=settings.model_cache_ttl_s,
        dev=dev_models(enabled=settings.dev_models_enabled,
                       max_output_tokens=settings.dev_max_tokens))
