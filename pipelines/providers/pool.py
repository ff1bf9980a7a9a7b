"""Provider clients for registry models, built once per model version and reused.

Building an SDK client costs an HTTP connection pool and a TLS context (milliseconds), and
its pooled connections are what keep the first token fast, so a worker keeps one client per
model and builds a new one only when an admin edits the model (its `updated_at` changes).
SDK clients are thread-safe, so a worker's threads share them. The SDKs are imported with
this module, when the worker boots: importing them takes about a second, which would
otherwise land on the first request of each worker process.
"""

from __future__ import annotations

import threading
from datetime import datetime

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
        self._lock = threading.Lock()

    def get(self, info: ModelInfo) -> ChatModel:
        cached = self._clients.get(info.id)
        if cached is not None and cached[0] == info.updated_at:
            return cached[1]
        with self._lock:
            cached = self._clients.get(info.id)
            if cached is not None and cached[0] == info.updated_at:
                return cached[1]
            # The replaced client may still serve another thread's stream; it is left to
            # the garbage collector rather than closed under it.
            model = self._build(info)
            self._clients[info.id] = (info.updated_at, model)
            return model

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
