"""Rendering chat events as Anthropic Messages SSE: block order and indices."""

from __future__ import annotations

import json

from api.formats.anthropic import MessageStreamWriter, message


def events_of(frames: bytes) -> list[dict]:
    out = []
    for block in frames.decode().strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        out.append(payload)
    return out


def test_text_then_tool_calls_become_numbered_blocks_in_order():
    writer = MessageStreamWriter("msg_1", "m", 12)
    frames = writer.opening()
    frames += writer.delta({"text": "Let me look. "})
    frames += writer.delta({"tool_calls": [{"index": 0, "id": "call_a", "name": "f"}]})
    frames += writer.delta({"tool_calls": [{"index": 0, "arguments": '{"x":'}]})
    frames += writer.delta({"tool_calls": [{"index": 0, "arguments": "1}"},
                                           {"index": 1, "id": "call_b", "name": "g"}]})
    frames += writer.finish({"finish_reason": "tool_calls",
                             "usage": {"prompt_tokens": 12, "completion_tokens": 9}})
    events = events_of(frames)
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_stop", "message_delta", "message_stop"]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f",
                                          "input": {}}
    assert events[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"x":'}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 12, "output_tokens": 9}


def test_a_whole_message_parses_tool_arguments_into_input():
    body = message("msg_1", "m", {
        "content": "ok", "finish_reason": "length",
        "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": '{"a": 1}'}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    assert body["content"][1] == {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 4}
