"""Which models exist and how to reach them: built-in dev models plus the Postgres registry.

The registry table is small and read on every chat request, so each process keeps a
snapshot for `ttl_s` seconds (admin edits reach every process within that) and looks a
missing id up directly, so a model registered a moment ago is found at once. The API uses
`AsyncModelRegistry`, workers `ModelRegistry`; both share the snapshot logic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.db import models as models_db
from pipelines.errors import ModelNotFound, ModelUnavailable
from pipelines.ports import ChatModel
from pipelines.secretbox import SecretBox

_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: str
    upstream_model: str
    context_window: int
    owned_by: str
    description: str = ""
    capabilities: tuple[str, ...] = ("chat", "streaming")
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    base_url: str | None = None
    fallbacks: tuple[str, ...] = ()
    timeout_s: float | None = None
    enabled: bool = True
    source: str = "builtin"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Opened only in the process that calls the upstream; never rendered anywhere.
    api_key: str | None = field(default=None, repr=False, compare=False)
    has_api_key: bool = False

    @property
    def status(self) -> str:
        return "available" if self.enabled else "disabled"

    def as_openai(self) -> dict[str, Any]:
        """The OpenAI `model` object plus Switchyard's fields."""
        created = int(self.created_at.timestamp()) if self.created_at else 0
        return {
            "id": self.id,
            "object": "model",
            "created": created,
            "owned_by": self.owned_by,
            "provider": self.provider,
            "context_window": self.context_window,
            "capabilities": list(self.capabilities),
            "pricing": {
                "input_per_mtok": self.input_price_per_mtok,
                "output_per_mtok": self.output_price_per_mtok,
                "currency": "USD",
            },
            "status": self.status,
            "description": self.description,
        }

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What `prompt_tokens` in and `completion_tokens` out cost at this model's prices."""
        return (
            Decimal(prompt_tokens) * Decimal(str(self.input_price_per_mtok))
            + Decimal(completion_tokens) * Decimal(str(self.output_price_per_mtok))
        ) / _MTOK


DEV_MODELS: dict[str, ModelInfo] = {
    "dev/echo": ModelInfo(
        id="dev/echo", provider="dev", upstream_model="echo", context_window=1_000_000,
        owned_by="switchyard-dev",
        description="Development model: streams back the last user message word by word.",
    ),
    "dev/lorem": ModelInfo(
        id="dev/lorem", provider="dev", upstream_model="lorem", context_window=1_000_000,
        owned_by="switchyard-dev",
        description="Development model: streams max_tokens words of lorem ipsum (default 16).",
    ),
}


def info_from_row(row: Any, box: SecretBox) -> ModelInfo:
    """A registry row as a ModelInfo, with its upstream key opened."""
    owned_by = {"dev": "switchyard-dev"}.get(row.provider, row.provider)
    return ModelInfo(
        id=row.id, provider=row.provider, upstream_model=row.upstream_model,
        context_window=row.context_window, owned_by=owned_by, description=row.description,
        capabilities=tuple(row.capabilities or ()),
        input_price_per_mtok=float(row.input_price_per_mtok),
        output_price_per_mtok=float(row.output_price_per_mtok),
        base_url=row.base_url, fallbacks=tuple(row.fallbacks or ()), timeout_s=row.timeout_s,
        enabled=row.enabled, source=row.source, created_at=row.created_at,
        updated_at=row.updated_at, api_key=box.open(row.api_key) if row.api_key else None,
        has_api_key=bool(row.api_key),
    )


class _Snapshot:
    """The registry as last read, plus the dev models, which no row can shadow."""

    def __init__(self, box: SecretBox, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.box = box
        self._ttl_s = ttl_s
        self._clock = clock
        self._models: dict[str, ModelInfo] = {}
        self._loaded_at = float("-inf")

    def _stale(self) -> bool:
        return self._clock() - self._loaded_at >= self._ttl_s

    def _store(self, rows: Iterable[Any]) -> None:
        self._models = {row.id: info_from_row(row, self.box) for row in rows}
        self._loaded_at = self._clock()

    def _remember(self, row: Any) -> ModelInfo:
        info = info_from_row(row, self.box)
        self._models = {**self._models, info.id: info}
        return info

    def invalidate(self) -> None:
        """Forget the snapshot, e.g. after this process edited the registry."""
        self._loaded_at = float("-inf")

    def _known(self, model_id: str) -> ModelInfo | None:
        return DEV_MODELS.get(model_id) or self._models.get(model_id)

    def _all(self) -> list[ModelInfo]:
        registry = [m for m in self._models.values() if m.id not in DEV_MODELS]
        return [*DEV_MODELS.values(), *sorted(registry, key=lambda m: m.id)]


def _not_found(model_id: str) -> ModelNotFound:
    return ModelNotFound(f"The model '{model_id}' does not exist.")


def usable(info: ModelInfo) -> ModelInfo:
    """`info`, or ModelUnavailable if an admin disabled it."""
    if not info.enabled:
        raise ModelUnavailable(f"The model '{info.id}' is disabled.")
    return info


class ModelRegistry(_Snapshot):
    """The registry for sync callers (worker threads): thread-safe, cached for `ttl_s`."""

    def __init__(self, engine: Engine, box: SecretBox, ttl_s: float = 3.0) -> None:
        super().__init__(box, ttl_s)
        self._engine = engine
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if self._stale():
            with self._lock:
                if self._stale():
                    with self._engine.connect() as conn:
                        self._store(conn.execute(models_db.all_models()))

    def get(self, model_id: str) -> ModelInfo:
        """The model `model_id` (enabled or not); ModelNotFound if there is none."""
        if model_id in DEV_MODELS:
            return DEV_MODELS[model_id]
        self._refresh()
        if (info := self._known(model_id)) is not None:
            return info
        with self._engine.connect() as conn:
            row = conn.execute(models_db.get_model(model_id)).first()
        if row is None:
            raise _not_found(model_id)
        return self._remember(row)

    def chain(self, model_id: str) -> list[ModelInfo]:
        """The model and then its enabled fallbacks, in order (fallbacks' own are not followed)."""
        primary = usable(self.get(model_id))
        chain = [primary]
        for fallback_id in primary.fallbacks:
            try:
                info = self.get(fallback_id)
            except ModelNotFound:
                continue
            if info.enabled and all(info.id != seen.id for seen in chain):
                chain.append(info)
        return chain


class AsyncModelRegistry(_Snapshot):
    """The registry for the API's event loop, cached for `ttl_s`."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, ttl_s: float = 3.0) -> None:
        super().__init__(box, ttl_s)
        self._engine = engine

    async def _refresh(self) -> None:
        if self._stale():
            async with self._engine.connect() as conn:
                self._store(await conn.execute(models_db.all_models()))

    async def get(self, model_id: str) -> ModelInfo:
        """The model `model_id` (enabled or not); ModelNotFound if there is none."""
        if model_id in DEV_MODELS:
            return DEV_MODELS[model_id]
        await self._refresh()
        if (info := self._known(model_id)) is not None:
            return info
        async with self._engine.connect() as conn:
            row = (await conn.execute(models_db.get_model(model_id))).first()
        if row is None:
            raise _not_found(model_id)
        return self._remember(row)

    async def resolve(self, model_id: str) -> ModelInfo:
        """The model a request may use now: it exists and is enabled."""
        return usable(await self.get(model_id))

    async def list(self) -> list[ModelInfo]:
        await self._refresh()
        return self._all()


def list_models() -> list[ModelInfo]:
    """The built-in dev models only; registry models come from a ModelRegistry."""
    return list(DEV_MODELS.values())


def get_model(model_id: str) -> ModelInfo:
    """A built-in dev model; registry models come from a ModelRegistry."""
    try:
        return DEV_MODELS[model_id]
    except KeyError:
        raise _not_found(model_id) from None


def chat_model(model_id: str) -> ChatModel:
    """A dev model bound to `model_id`; registry models are built by `ChatModels`."""
    from pipelines.providers.dev import DevChatModel

    return DevChatModel(get_model(model_id).id)
