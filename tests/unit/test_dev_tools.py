"""dev/tools: asks for the tool the user names (else the first offered) with arguments from
the message, then quotes the tool results; offered no tools, it echoes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pipelines.ports import ChatChunk
from pipelines.providers.dev import DevChatModel

TOOLS = [
    {"type": "function", "function": {"name": "current_time", "parameters": {
        "type": "object", "properties": {"timezone": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "calculator", "parameters": {
        "type": "object", "required": ["expression"],
        "properties": {"expression": {"type": "string"}}}}},
]


async def _drain(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


def run(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        ) -> list[ChatChunk]:
    request: dict[str, Any] = {"model": "dev/tools", "messages": messages}
    if tools is not None:
        request["tools"] = tools
    return asyncio.run(_drain(DevChatModel("dev/tools").stream(request)))


def the_call(chunks: list[ChatChunk]) -> tuple[str | None, dict[str, Any]]:
    [call] = [delta for chunk in chunks for delta in chunk.tool_calls]
    assert call.id and call.id.startswith("call_dev")
    return call.name, json.loads(call.arguments)


def test_the_tool_the_user_names_is_called_with_the_text_after_its_name() -> None:
    chunks = run([{"role": "user", "content": "calculator: 6 * 7?"}], TOOLS)
    assert the_call(chunks) == ("calculator", {"expression": "6 * 7"})
    assert chunks[-1].finish_reason == "tool_calls" and not any(c.text for c in chunks)


def test_a_json_object_in_the_message_is_the_arguments() -> None:
    chunks = run([{"role": "user", "content": 'use current_time {"timezone": "UTC"}'}], TOOLS)
    assert the_call(chunks) == ("current_time", {"timezone": "UTC"})


def test_without_a_named_tool_the_first_is_called_without_optional_arguments() -> None:
    assert the_call(run([{"role": "user", "content": "hello"}], TOOLS)) == ("current_time", {})


def test_after_tool_results_it_answers_quoting_them() -> None:
    messages = [
        {"role": "user", "content": "calculator: 6*7"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    chunks = run(messages, TOOLS)
    assert "".join(c.text for c in chunks) == "calculator returned: 42"
    assert chunks[-1].finish_reason == "stop" and not any(c.tool_calls for c in chunks)
    # A new user message starts over: a tool is asked for again, under another id.
    again = run([*messages, {"role": "assistant", "content": "calculator returned: 42"},
                 {"role": "user", "content": "calculator: 1+1"}], TOOLS)
    assert the_call(again) == ("calculator", {"expression": "1+1"})


def test_offered_no_tools_it_echoes() -> None:
    assert "".join(c.text for c in run([{"role": "user", "content": "just talk"}])) == \
        "just talk"
