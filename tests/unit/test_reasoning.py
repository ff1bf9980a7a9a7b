"""A thinking model's reasoning: read from OpenAI-compatible `reasoning_content` deltas and
Anthropic `thinking` deltas, carried apart from the answer by chat.complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson

from pipelines.chat import complete
from pipelines.ports import ChatChunk, Usage
from pipelines.providers.anthropic import _map_events
from pipelines.providers.openai import _chunks, _whole_completion


async def _collect(chunks: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in chunks]


async def _raw(frames: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield b"data: " + orjson.dumps(frame) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_openai_compatible_reasoning_content_becomes_reasoning_apart_from_the_text() -> None:
    chunks = asyncio.run(_collect(_chunks(_raw([
        _choice({"role": "assistant", "content": ""}),
        _choice({"reasoning_content": "Think "}), _choice({"reasoning": "twice."}),
        _choice({"content": "Done."}), _choice({}, "stop")]))))
    assert [(c.reasoning, c.text) for c in chunks[:-1]] == [
        ("Think ", ""), ("twice.", ""), ("", "Done.")]
    assert chunks[-1].finish_reason == "stop"


def test_a_whole_openai_answer_keeps_its_reasoning_content() -> None:
    [first, _] = _whole_completion({"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": "42", "reasoning_content": "6*7"}}]})
    assert (first.reasoning, first.text) == ("6*7", "42")


def test_anthropic_thinking_deltas_become_reasoning() -> None:
    def event(kind: str, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(type=kind, **fields)

    usage = SimpleNamespace(input_tokens=3, output_tokens=0)
    events = [
        event("message_start", message=SimpleNamespace(usage=usage)),
        event("content_block_start", index=0,
              content_block=SimpleNamespace(type="thinking", thinking="")),
        event("content_block_delta", index=0,
              delta=SimpleNamespace(type="thinking_delta", thinking="Hmm.")),
        event("content_block_delta", index=0,
              delta=SimpleNamespace(type="signature_delta", signature="sig")),
        event("content_block_start", index=1,
              content_block=SimpleNamespace(type="text", text="")),
        event("content_block_delta", index=1,
              delta=SimpleNamespace(type="text_delta", text="Yes.")),
        event("message_delta", delta=SimpleNamespace(stop_reason="end_turn"),
              usage=SimpleNamespace(output_tokens=4, input_tokens=None)),
        event("message_stop"),
    ]

    async def stream() -> AsyncIterator[Any]:
        for item in events:
            yield item

    chunks = asyncio.run(_collect(_map_events(stream())))
    assert [(c.reasoning, c.text) for c in chunks[:-1]] == [("Hmm.", ""), ("", "Yes.")]


class _Thinker:
    def __init__(self, chunks: list[ChatChunk]) -> None:
        self.chunks = chunks

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        for chunk in self.chunks:
            yield chunk


def _complete(chunks: list[ChatChunk]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    published: list[dict[str, Any]] = []

    async def emit(type_: str, data: dict[str, Any]) -> bool:
        published.append(data)
        return False

    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    result = asyncio.run(complete(_Thinker(chunks), request, emit, flush_ms=0))
    return result, published


def test_complete_publishes_reasoning_in_deltas_and_returns_it_apart_from_the_content() -> None:
    result, published = _complete([
        ChatChunk(reasoning="Let me "), ChatChunk(reasoning="see."), ChatChunk(text="Hi!"),
        ChatChunk(finish_reason="stop", usage=Usage(1, 3))])
    assert result["reasoning"] == "Let me see." and result["content"] == "Hi!"
    assert "".join(d.get("reasoning", "") for d in published) == "Let me see."
    assert "".join(d.get("text", "") for d in published) == "Hi!"


def test_an_answer_without_reasoning_keeps_the_results_shape() -> None:
    result, published = _complete([ChatChunk(text="Hi!"),
                                   ChatChunk(finish_reason="stop", usage=Usage(1, 1))])
    assert "reasoning" not in result
    assert all("reasoning" not in d for d in published)
