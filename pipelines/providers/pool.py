"""Provider clients for registry models, built once per model version and reused.

Building an SDK client costs an HTTP connection pool and a TLS context (milliseconds), and
its pooled connections are what keep the first token fast, so a worker keeps one client per
model and builds a new one only when an admin edits the model (its `updated_at` changes).
Clients are async and live on the worker process's one event loop, which every in-flight
job of the process shares. The SDKs are imported with this module, when the worker boots:
importing them takes about a second, which would otherwise land on the first request of
each worker process.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from pipelines.models import ModelInfo
from pipelines.ports import ChatModel
from pipelines.providers.anthropic import AnthropicChatModel
from pipelines.providers.dev import DevChatModel
from pipelines.providers.openai import OpenAIChatModel


class ChatModels:
    """`ChatModels(...).get(info)`: a ChatModel for a registry or dev model."""

    def __init__(self, *, default_timeout_s: float, max_retries: int,
                 backoff_base_s: float) -> None:
        self._default_timeout_s = default_timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._clients: dict[str, tuple[datetime | None, ChatModel]] = {}
        # Replaced clients, closed once the streams they still serve have had time to end.
        self._retired: set[asyncio.Task[None]] = set()

    def get(self, info: ModelInfo) -> ChatModel:
        """Called on the event loop only, so no lock: a check and a store cannot interleave."""
        cached = self._clients.get(info.id)
        if cached is not None and cached[0] == info.updated_at:
            return cached[1]
        model = self._build(info)
        self._clients[info.id] = (info.updated_at, model)
        if cached is not None:
            self._retire(cached[1])
        return model

    async def aclose(self) -> None:
        """Close every client (worker shutdown)."""
        for _, model in self._clients.values():
            await _close(model)
        self._clients.clear()

    def _retire(self, model: ChatModel) -> None:
        async def later() -> None:
            # A stream started on the old client may still be running; give it the
            # longest a stream may take before closing the pool under it.
            await asyncio.sleep(self._default_timeout_s * 2)
            await _close(model)

        task = asyncio.get_running_loop().create_task(later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def _build(self, info: ModelInfo) -> ChatModel:
        timeout_s = info.timeout_s or self._default_timeout_s
        if info.provider == "openai":
            return OpenAIChatModel(info.upstream_model, api_key=info.api_key,
                                   base_url=info.base_url, timeout_s=timeout_s,
                                   max_retries=self._max_retries,
                                   backoff_base_s=self._backoff_base_s)
        if info.provider == "anthropic":
            return AnthropicChatModel(info.upstream_model, api_key=info.api_key,
                                      base_url=info.base_url, timeout_s=timeout_s,
                                      max_retries=self._max_retries,
                                      backoff_base_s=self._backoff_base_s)
        return DevChatModel(info.upstream_model)


async def _close(model: Any) -> None:
    close = getattr(model, "aclose", None)
    if close is not None:
        await close()
