"""Deterministic development models: no network, no key, fully predictable output.

They exist so the whole system (queue, events, SSE, SDK clients) can be run and tested
without an upstream. `dev_options` in the request shapes timing and failures:
`token_delay_ms` (pause between tokens) and `fail_after_tokens` (break the stream after
N tokens, or at the end if fewer: UpstreamError 502 once output has started, but
UpstreamUnavailable at 0, because then nothing has been sent and the worker's retry is
the behaviour to exercise).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from pipelines.errors import ModelNotFound, UpstreamError, UpstreamUnavailable
from pipelines.ports import ChatChunk, Usage
from pipelines.tokens import count_message_tokens

DEFAULT_LOREM_TOKENS = 16
DEV_MODELS = ("echo", "lorem")

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat"
).split()
# A word with the whitespace after it (and any before the first), so that joining the
# tokens gives back the text exactly.
_WORD = re.compile(r"\s*\S+\s*")


def split_words(text: str) -> list[str]:
    """`text` cut into words that keep their trailing whitespace."""
    return _WORD.findall(text)


class DevChatModel:
    """`dev/echo` repeats the last user message; `dev/lorem` streams N lorem words."""

    def __init__(self, model: str) -> None:
        name = model.removeprefix("dev/")
        if name not in DEV_MODELS:
            raise ModelNotFound(f"unknown development model {model!r}")
        self.model = f"dev/{name}"
        self._name = name

    def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        """Stream the model's words, paced and broken as `dev_options` asks."""
        options = request.get("dev_options") or {}
        delay_s = float(options.get("token_delay_ms") or 0) / 1000
        fail_after = options.get("fail_after_tokens")
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        messages = request.get("messages") or []
        if self._name == "echo":
            words = split_words(_last_user_text(messages))
        else:
            count = int(limit or DEFAULT_LOREM_TOKENS)
            words = [f"{_LOREM[i % len(_LOREM)]} " for i in range(count)]
            if words:
                words[-1] = words[-1].rstrip()
        finish_reason = "stop"
        if limit is not None and (self._name == "lorem" or len(words) > int(limit)):
            # Like a real model, output cut at the caller's limit ends with "length".
            words, finish_reason = words[: int(limit)], "length"
        prompt_tokens = count_message_tokens(messages, self.model)
        return self._emit(words, delay_s, fail_after, finish_reason, prompt_tokens)

    async def _emit(
        self,
        words: list[str],
        delay_s: float,
        fail_after: int | None,
        finish_reason: str,
        prompt_tokens: int,
    ) -> AsyncIterator[ChatChunk]:
        if fail_after is not None and int(fail_after) <= 0:
            raise UpstreamUnavailable(f"{self.model} failed before its first token (dev_options)")
        for emitted, word in enumerate(words):
            if fail_after is not None and emitted >= int(fail_after):
                break
            if delay_s and emitted:
                await asyncio.sleep(delay_s)
            yield ChatChunk(text=word)
        if fail_after is not None:
            emitted = min(int(fail_after), len(words))
            raise UpstreamError(
                f"{self.model} failed after {emitted} tokens (dev_options)", status=502
            )
        yield ChatChunk(
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words)),
        )


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return ""
