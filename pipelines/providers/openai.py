"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, llama.cpp, our deployments).

Error mapping (see `retry.classify`): 401/403 → UpstreamError 502 that never names the
key; 429 → UpstreamRateLimited with Retry-After; 400/413/422 → UpstreamError 400 with the
upstream's reason, since the caller's request is passed through nearly as sent and the
caller can fix it; other 4xx → 502; 5xx, connection errors and timeouts before output →
retried here, then UpstreamUnavailable (UpstreamTimeout 504 for timeouts).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from functools import partial
from typing import Any

import openai

from pipelines.errors import UpstreamError
from pipelines.ports import ChatChunk, ToolCallDelta, Usage
from pipelines.providers.retry import call_with_retries, classify, stream_with_retries

# Request fields forwarded upstream; everything else (dev_options, conversation_id, …)
# is ours and must not reach a provider that would reject unknown fields.
PASSTHROUGH_FIELDS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    "reasoning_effort",
)


class OpenAIChatModel:
    """A ChatModel on the Chat Completions API, streaming with usage."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float = 0.5,
    ) -> None:
        self.model = model
        self._api_key = api_key
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        # Local OpenAI-compatible servers take no key, but the SDK insists on one (and would
        # otherwise read OPENAI_API_KEY itself: keys come from the model registry only).
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
        )
        self._classify = partial(classify, sdk=openai, provider="openai", api_key=api_key)

    def close(self) -> None:
        """Release the pooled connections."""
        self._client.close()

    def stream(self, request: dict[str, Any]) -> Iterator[ChatChunk]:
        """Stream a completion; see the module docstring for the failure policy."""
        params = {key: request[key] for key in PASSTHROUGH_FIELDS if request.get(key) is not None}
        params["model"] = self.model
        params["messages"] = request["messages"]
        return stream_with_retries(
            partial(self._attempt, params),
            self._classify,
            max_retries=self._max_retries,
            backoff_base_s=self._backoff_base_s,
            provider="openai",
        )

    def _attempt(self, params: dict[str, Any]) -> Generator[ChatChunk, None, None]:
        stream = self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            for event in stream:
                if event.usage is not None:
                    usage = Usage(
                        prompt_tokens=event.usage.prompt_tokens or 0,
                        completion_tokens=event.usage.completion_tokens or 0,
                    )
                if not event.choices:
                    continue
                choice = event.choices[0]
                delta = choice.delta
                text = (delta.content or "") if delta is not None else ""
                calls = [
                    ToolCallDelta(
                        index=call.index,
                        id=call.id,
                        name=call.function.name if call.function else None,
                        arguments=(call.function.arguments or "") if call.function else "",
                    )
                    for call in ((delta.tool_calls or []) if delta is not None else [])
                ]
                if text or calls:
                    yield ChatChunk(text=text, tool_calls=calls)
                # Held back: the final chunk must carry the reason and the usage that
                # only arrives in the chunk after it.
                finish_reason = choice.finish_reason or finish_reason
        finally:
            stream.close()
        yield ChatChunk(finish_reason=finish_reason or "stop", usage=usage)


class OpenAIEmbedder:
    """An Embedder on the OpenAI embeddings API (or any compatible server)."""

    def __init__(
        self,
        model: str,
        dimension: int,
        api_key: str | None,
        base_url: str | None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_base_s: float = 0.5,
    ) -> None:
        self.model = model
        self.dimension = dimension
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._classify = partial(classify, sdk=openai, provider="openai", api_key=api_key)

    def close(self) -> None:
        """Release the pooled connections."""
        self._client.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for `texts`, in order; a dimension mismatch is a misconfigured model."""
        if not texts:
            return []
        extra: dict[str, Any] = {}
        # Only the text-embedding-3 family can shorten vectors; other servers reject the field.
        if self.model.startswith("text-embedding-3"):
            extra["dimensions"] = self.dimension
        response = call_with_retries(
            lambda: self._client.embeddings.create(model=self.model, input=list(texts), **extra),
            self._classify,
            max_retries=self._max_retries,
            backoff_base_s=self._backoff_base_s,
        )
        vectors = [list(item.embedding) for item in sorted(response.data, key=lambda d: d.index)]
        if any(len(vector) != self.dimension for vector in vectors):
            raise UpstreamError(
                f"embedding model {self.model} returned vectors of the wrong dimension "
                f"(expected {self.dimension})",
                status=502,
            )
        return vectors
