"""Anthropic Messages upstream behind the OpenAI-format ChatModel contract.

The request is translated by `pipelines.translate`; the stream events are mapped back
here. Errors and retries follow the same policy as the OpenAI provider (see
`retry.classify`); Anthropic's 529 "overloaded" counts as a transient 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anthropic

from pipelines.ports import ChatChunk, ToolCallDelta, Usage
from pipelines.providers.retry import classify, stream_with_retries
from pipelines.translate import (
    DEFAULT_ANTHROPIC_MAX_TOKENS,
    anthropic_stop_reason_to_openai,
    openai_request_to_anthropic,
)

# Passed as named arguments; the rest of the body goes through `extra_body`, because
# SDK releases add and drop typed keyword arguments (2.x dropped `temperature`) while
# the wire format keeps accepting them.
_NAMED_FIELDS = ("model", "messages", "max_tokens")


class AnthropicChatModel:
    """A ChatModel on the Anthropic Messages API, streaming with usage."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float = 0.5,
        default_max_tokens: int = DEFAULT_ANTHROPIC_MAX_TOKENS,
    ) -> None:
        self.model = model
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._default_max_tokens = default_max_tokens
        # An explicit placeholder keeps the SDK from reading ANTHROPIC_API_KEY or config
        # profiles itself: keys come from the model registry only.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._classify = partial(classify, sdk=anthropic, provider="anthropic", api_key=api_key)

    async def aclose(self) -> None:
        """Release the pooled connections."""
        await self._client.close()

    def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        """Stream a completion; see the module docstring for the failure policy."""
        body = openai_request_to_anthropic(request, default_max_tokens=self._default_max_tokens)
        body["model"] = self.model
        body.pop("stream", None)
        return stream_with_retries(
            partial(self._attempt, body),
            self._classify,
            max_retries=self._max_retries,
            backoff_base_s=self._backoff_base_s,
            provider="anthropic",
        )

    async def _attempt(self, body: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        named = {key: body[key] for key in _NAMED_FIELDS}
        extra = {key: value for key, value in body.items() if key not in _NAMED_FIELDS}
        stream = await self._client.messages.create(**named, stream=True,
                                                    extra_body=extra or None)
        try:
            async for chunk in _map_events(stream):
                yield chunk
        finally:
            await stream.close()


async def _map_events(events: AsyncIterator[Any]) -> AsyncIterator[ChatChunk]:
    """ChatChunks for Anthropic stream events, ending with reason and usage."""
    # Anthropic numbers content blocks (text and tool_use together); OpenAI numbers
    # tool calls alone, so map block index → tool-call index.
    tool_index: dict[int, int] = {}
    prompt_tokens = completion_tokens = 0
    stop_reason: str | None = None
    async for event in events:
        kind = event.type
        if kind == "message_start":
            usage = event.message.usage
            prompt_tokens = _input_tokens(usage)
            completion_tokens = usage.output_tokens or 0
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tool_index[event.index] = len(tool_index)
                yield ChatChunk(
                    tool_calls=[
                        ToolCallDelta(index=tool_index[event.index], id=block.id, name=block.name)
                    ]
                )
            elif block.type == "text" and block.text:
                yield ChatChunk(text=block.text)
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                yield ChatChunk(text=delta.text)
            elif delta.type == "thinking_delta" and delta.thinking:
                # Extended thinking: the model's reasoning, apart from its answer.
                yield ChatChunk(reasoning=delta.thinking)
            elif delta.type == "input_json_delta" and event.index in tool_index:
                if delta.partial_json:
                    yield ChatChunk(
                        tool_calls=[
                            ToolCallDelta(
                                index=tool_index[event.index], arguments=delta.partial_json
                            )
                        ]
                    )
        elif kind == "message_delta":
            stop_reason = event.delta.stop_reason or stop_reason
            usage = event.usage
            if usage is not None:
                completion_tokens = usage.output_tokens or completion_tokens
                # Newer API versions repeat the (cumulative) input count here.
                if usage.input_tokens is not None:
                    prompt_tokens = _input_tokens(usage)
        elif kind == "message_stop":
            break
    yield ChatChunk(
        finish_reason=anthropic_stop_reason_to_openai(stop_reason) or "stop",
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
    )


def _input_tokens(usage: Any) -> int:
    """All prompt tokens, cached or not: OpenAI's `prompt_tokens` counts them all."""
    return (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )
