"""Deterministic development models: no network, no key, fully predictable output.

They exist so the whole system (queue, events, SSE, SDK clients) can be run and tested
without an upstream. `dev/tools` lets users try agents offline: offered tools, it asks
for one (the first whose name the last user message mentions, else the first), with
arguments from that message (a JSON object in it, else the text after the tool's name for
the tool's first required string parameter); once tool results follow the user's message
it answers with a text that quotes them. Offered no tools, it echoes.

`dev_options` in the request shapes timing and failures: `token_delay_ms` (pause between
tokens) and `fail_after_tokens` (break the stream after N tokens, or at the end if fewer:
UpstreamError 502 once output has started, but UpstreamUnavailable at 0, because then
nothing has been sent and the worker's retry is the behaviour to exercise).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pipelines.errors import ModelNotFound, UpstreamError, UpstreamUnavailable
from pipelines.ports import ChatChunk, ToolCallDelta, Usage
from pipelines.tokens import count_message_tokens

DEFAULT_LOREM_TOKENS = 16
# What `switchyard model-server` serves over the wire too; dev/tools (tool calls) runs
# in-process only.
DEV_MODELS = ("echo", "lorem")
_ALL_MODELS = (*DEV_MODELS, "tools")

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
    """`dev/echo` repeats the last user message; `dev/lorem` streams N lorem words;
    `dev/tools` calls a tool, then quotes its results (see the module docstring)."""

    def __init__(self, model: str) -> None:
        name = model.removeprefix("dev/")
        if name not in _ALL_MODELS:
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
        call: ToolCallDelta | None = None
        if self._name == "tools":
            text, call = _tools_step(messages, request.get("tools") or [])
            words = split_words(text)
        elif self._name == "echo":
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
        if call is not None:
            finish_reason = "tool_calls"
        return self._emit(words, delay_s, fail_after, finish_reason, prompt_tokens, call)

    async def _emit(
        self,
        words: list[str],
        delay_s: float,
        fail_after: int | None,
        finish_reason: str,
        prompt_tokens: int,
        call: ToolCallDelta | None = None,
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
        if call is not None:
            yield ChatChunk(tool_calls=[call])
        yield ChatChunk(
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=prompt_tokens,
                        completion_tokens=len(words) + (call is not None)),
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


def _tools_step(messages: list[dict[str, Any]],
                tools: list[dict[str, Any]]) -> tuple[str, ToolCallDelta | None]:
    """dev/tools' next step: (text, None) to answer, ("", call) to ask for a tool."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"),
                    default=-1)
    results = [m for m in messages[last_user + 1:] if m.get("role") == "tool"]
    if results:
        names = {call.get("id"): (call.get("function") or {}).get("name", "tool")
                 for m in messages[last_user + 1:] if m.get("role") == "assistant"
                 for call in m.get("tool_calls") or ()}
        quoted = [f"{names.get(m.get('tool_call_id'), 'tool')} returned: "
                  f"{_text_of(m.get('content'))}" for m in results]
        return "\n".join(quoted), None
    functions = [t.get("function") or {} for t in tools if t.get("type") == "function"]
    functions = [f for f in functions if f.get("name")]
    if not functions:
        return _last_user_text(messages), None
    text = _last_user_text(messages)
    lowered = text.lower()
    chosen = next((f for f in functions if f["name"].lower() in lowered), functions[0])
    arguments = _arguments_from(text, chosen)
    # Deterministic, and distinct at each point of a conversation (call ids are unique
    # within an agent session).
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode())
    return "", ToolCallDelta(index=0, id=f"call_dev{digest.hexdigest()[:20]}",
                             name=chosen["name"], arguments=json.dumps(arguments))


def _arguments_from(text: str, function: dict[str, Any]) -> dict[str, Any]:
    """A JSON object in `text`, else the text after the tool's name (or all of it) for the
    function's first required string parameter; {} when it has none."""
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            found = json.loads(text[start:end + 1])
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    required = [name for name in parameters.get("required") or ()
                if (properties.get(name) or {}).get("type", "string") == "string"]
    if not required:
        return {}
    at = text.lower().find(function["name"].lower())
    value = text[at + len(function["name"]):] if at >= 0 else text
    return {required[0]: value.strip(" \t\n:,-?") or text.strip()}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
