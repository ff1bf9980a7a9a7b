"""Which models exist and how to reach them: built-in dev models plus the Postgres registry.

The registry table is small and read on every chat request, so each process keeps a
snapshot for `ttl_s` seconds (admin edits reach every process within that) and looks a
missing id up directly, so a model registered a moment ago is found at once. The API and
the workers' event loops use `AsyncModelRegistry`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.db import models as models_db
from pipelines.errors import MaxTokensTooLarge, ModelNotFound, ModelUnavailable
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
    # The most tokens one answer may have; None: no cap of our own (the upstream's applies).
    max_output_tokens: int | None = None
    enabled: bool = True
    source: str = "builtin"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Opened only in the process that calls the upstream; never rendered anywhere.
    api_key: str | None = field(default=None, repr=False, compare=False)
    has_api_key: bool = False
    # A deployment's model: its deployment's model status (schemas/deployments.py); None
    # for every other model. Only "loaded" is routable.
    runtime_status: str | None = None

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return self.runtime_status or "available"

    @property
    def routable(self) -> bool:
        return self.enabled and self.runtime_status in (None, "loaded")

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
            "max_output_tokens": self.max_output_tokens,
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
    "dev/tools": ModelInfo(
        id="dev/tools", provider="dev", upstream_model="tools", context_window=1_000_000,
        owned_by="switchyard-dev", capabilities=("chat", "streaming", "tools"),
        description="Development model: asks for a tool it is offered (the one the user "
                    "names, else the first; arguments from the message), then quotes the "
                    "tool results.",
    ),
}


def info_from_row(row: Any, box: SecretBox) -> ModelInfo:
    """A registry row as a ModelInfo, with its upstream key opened."""
    owned_by = {"dev": "switchyard-dev"}.get(row.provider, row.provider)
    if row.source == "deployment":
        owned_by = "switchyard-deployment"
    return ModelInfo(
        id=row.id, provider=row.provider, upstream_model=row.upstream_model,
        context_window=row.context_window, owned_by=owned_by, description=row.description,
        capabilities=tuple(row.capabilities or ()),
        input_price_per_mtok=float(row.input_price_per_mtok),
        output_price_per_mtok=float(row.output_price_per_mtok),
        base_url=row.base_url, fallbacks=tuple(row.fallbacks or ()), timeout_s=row.timeout_s,
        max_output_tokens=row.max_output_tokens, enabled=row.enabled, source=row.source,
        created_at=row.created_at, updated_at=row.updated_at,
        api_key=box.open(row.api_key) if row.api_key else None, has_api_key=bool(row.api_key),
        runtime_status=getattr(row, "runtime_status", None),
    )


def dev_models(*, enabled: bool, max_output_tokens: int | None) -> dict[str, ModelInfo]:
    """The dev models a deployment offers: none unless enabled, each answer capped."""
    if not enabled:
        return {}
    return {model_id: replace(info, max_output_tokens=max_output_tokens)
            for model_id, info in DEV_MODELS.items()}


def _requested_tokens(request: Mapping[str, Any]) -> tuple[str, int | None]:
    """The output tokens a chat body asks for, and the field that says so
    (`max_completion_tokens` wins over `max_tokens`, as in OpenAI's API)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return name, value
    return "max_tokens", None


def check_output_tokens(info: ModelInfo, request: Mapping[str, Any]) -> None:
    """Raise MaxTokensTooLarge when `request` asks for more tokens than `info` allows."""
    name, requested = _requested_tokens(request)
    cap = info.max_output_tokens
    if cap is not None and requested is not None and requested > cap:
        raise MaxTokensTooLarge(
            f"{name} is too large: {requested:,}. The model '{info.id}' answers with at most "
            f"{cap:,} tokens.", details={"field": name, "max": cap, "found": requested})


def output_token_limit(info: ModelInfo, request: Mapping[str, Any]) -> int | None:
    """The max_tokens to send upstream: the request's, at most the model's cap; the cap when
    the request names none (None: neither).

    Clamps rather than refuses: the edge refused requests over the cap already
    (`check_output_tokens`), so a request over it here met a newer cap than this process's
    snapshot, or is going to a fallback with a smaller one.
    """
    _, requested = _requested_tokens(request)
    cap = info.max_output_tokens
    if requested is None or cap is None:
        return cap if requested is None else requested
    return min(requested, cap)


def _not_found(model_id: str) -> ModelNotFound:
    return ModelNotFound(f"The model '{model_id}' does not exist.")


def usable(info: ModelInfo) -> ModelInfo:
    """`info`, or ModelUnavailable if an admin disabled it or its deployment is not
    running (loading, unhealthy, stopped)."""
    if not info.enabled:
        raise ModelUnavailable(f"The model '{info.id}' is disabled.")
    if not info.routable:
        raise ModelUnavailable(f"The model '{info.id}' is not available now: its deployment "
                               f"is {info.runtime_status}.")
    return info


class AsyncModelRegistry:
    """The registry for an event loop (the API's, a worker's): the rows as last read, cached
    for `ttl_s`, plus the enabled dev models, which no row can shadow."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, ttl_s: float = 3.0, *,
                 dev: Mapping[str, ModelInfo] = DEV_MODELS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self.box = box
        self._dev = dev
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
        return self._dev.get(model_id) or self._models.get(model_id)

    def _builtin(self, model_id: str) -> ModelInfo | None:
        """A dev model if `model_id` names one; ModelNotFound if it is switched off."""
        if model_id not in DEV_MODELS:
            return None
        if model_id not in self._dev:
            raise _not_found(model_id)
        return self._dev[model_id]

    def _all(self) -> list[ModelInfo]:
        registry = [m for m in self._models.values() if m.id not in DEV_MODELS]
        return [*self._dev.values(), *sorted(registry, key=lambda m: m.id)]


    async def _refresh(self) -> None:
        if self._stale():
            async with self._engine.connect() as conn:
                self._store(await conn.execute(models_db.all_models()))

    async def get(self, model_id: str) -> ModelInfo:
        """The model `model_id` (enabled or not); ModelNotFound if there is none."""
        if (builtin := self._builtin(model_id)) is not None:
            return builtin
        await self._refresh()
        if (info := self._known(model_id)) is not None:
            return info
        async with self._engine.connect() as conn:
            row = (await conn.execute(models_db.get_model(model_id))).first()
        if row is None:
            raise _not_found(model_id)
        return self._remember(row)

    async def resolve(self, model_id: str) -> ModelInfo:
        """The model a request may use now: it exists and is enabled, and is routable or
        has a routable fallback (the worker's `chain` then skips it)."""
        info = await self.get(model_id)
        if info.enabled and not info.routable and len(await self.chain(model_id)) > 0:
            return info
        return usable(info)

    async def check_job_output_tokens(self, job_input: Mapping[str, Any]) -> None:
        """`check_output_tokens` for each model a chat (`model`) or compare (`models`) job
        input names; ModelNotFound for one that does not exist."""
        models = job_input.get("models")
        for model_id in models if isinstance(models, list) else [job_input.get("model")]:
            if isinstance(model_id, str):
                check_output_tokens(await self.get(model_id), job_input)

    async def chain(self, model_id: str) -> list[ModelInfo]:
        """The model and then its enabled fallbacks, in order (fallbacks' own are not followed);
        a deployment's model that is not running is left out, so its fallbacks answer."""
        primary = await self.get(model_id)
        if primary.enabled and not primary.routable and primary.fallbacks:
            chain: list[ModelInfo] = []
        else:
            chain = [usable(primary)]
        for fallback_id in primary.fallbacks:
            try:
                info = await self.get(fallback_id)
            except ModelNotFound:
                continue
            if info.routable and all(info.id != seen.id for seen in chain):
                chain.append(info)
        if not chain:
            usable(primary)
        return chain

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
