"""chat.complete: deltas coalesced by time with a deadline, the upstream TTFT on the first
delta, whole answers that publish nothing, and cancellation that closes the model's stream.

The model fakes set a fake clock to each chunk's arrival time, so which chunks share a
delta never depends on how fast this machine runs; a stalled chunk waits on an
asyncio.Event, so "published before the stall ended" is an order, not a measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipelines.chat import complete
from pipelines.errors import JobCancelled
from pipelines.ports import ChatChunk, ToolCallDelta, Usage

REQUEST = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
STALL = "<stall>"
# Long enough never to fire on a working implementation; it only turns a broken one's
# hang into a failure.
WATCHDOG_S = 5.0


class Clock:
    """`complete`'s clock, moved by the model as its chunks "arrive"."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedModel:
    """Yields a script of (arrival time, text) chunks; at STALL, waits for `release`.

    Writes "stalled", "resumed" and "closed" into the shared `timeline`, next to the
    deltas the emit records there.
    """

    def __init__(self, clock: Clock, timeline: list[str], script: list[Any]) -> None:
        self.clock = clock
        self.timeline = timeline
        self.script = script
        self.release = asyncio.Event()
        self.yielded = 0
        self.closed = False

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        start = self.clock.now
        try:
            for step in self.script:
                if step == STALL:
                    self.timeline.append("stalled")
                    await self.release.wait()
                    self.timeline.append("resumed")
                    continue
                at, text = step
                self.clock.now = start + at
                self.yielded += 1
                yield ChatChunk(text=text)
            yield ChatChunk(finish_reason="stop", usage=Usage(prompt_tokens=3,
                                                              completion_tokens=self.yielded))
        finally:
            self.closed = True
            self.timeline.append("closed")


class Emit:
    """Records deltas in the timeline; calls `on_text` with all text published so far."""

    def __init__(self, timeline: list[str], *, on_text: Any = None,
                 cancel_at: int | None = None) -> None:
        self.timeline = timeline
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.on_text = on_text
        self.cancel_at = cancel_at

    async def __call__(self, type_: str, data: dict[str, Any]) -> bool:
        self.events.append((type_, data))
        self.timeline.append(f"{type_}:{data.get('text', '')}")
        if self.on_text is not None:
            self.on_text("".join(d.get("text", "") for t, d in self.events if t == "delta"))
        return self.cancel_at is not None and len(self.events) >= self.cancel_at


def words(count: int, every_s: float) -> list[tuple[float, str]]:
    return [(every_s * (i + 1), f"w{i} ") for i in range(count)]


async def _with_watchdog(model: ScriptedModel, run: Any) -> Any:
    watchdog = asyncio.get_running_loop().call_later(WATCHDOG_S, model.release.set)
    try:
        return await run
    finally:
        watchdog.cancel()


def test_text_waiting_when_its_window_closes_is_published_without_waiting_for_the_next_chunk():
    async def go() -> tuple[list[str], dict[str, Any]]:
        clock, timeline = Clock(), list[str]()
        # "a" goes out at once; "b" and "c" arrive within its 10 ms window; then the model
        # goes quiet until the test sees "abc" published.
        model = ScriptedModel(clock, timeline, [
            (0.050, "a"), (0.051, "b"), (0.052, "c"), STALL, (0.500, "d")])

        def release_once_all_was_published(text: str) -> None:
            if text == "abc":
                model.release.set()

        emit = Emit(timeline, on_text=release_once_all_was_published)
        result = await _with_watchdog(model, complete(model, REQUEST, emit, flush_ms=10,
                                                      clock=clock))
        return timeline, result

    timeline, result = asyncio.run(go())
    assert timeline == ["delta:a", "stalled", "delta:bc", "resumed", "delta:d", "closed"]
    assert result["content"] == "abcd"


def test_text_within_one_window_is_coalesced_into_one_delta():
    async def go() -> list[tuple[str, dict[str, Any]]]:
        clock, timeline = Clock(), list[str]()
        # Ten words 2 ms apart with a 5 ms window: the first word alone, then whatever
        # arrived until the window (counted from the previous delta) closed.
        model = ScriptedModel(clock, timeline, words(10, 0.002))
        emit = Emit(timeline)
        await complete(model, REQUEST, emit, flush_ms=5, clock=clock)
        return emit.events

    events = asyncio.run(go())
    assert [d["text"] for t, d in events if t == "delta"] == [
        "w0 ", "w1 w2 w3 ", "w4 w5 w6 ", "w7 w8 w9 "]


def test_the_first_delta_carries_the_upstream_ttft_and_the_result_the_upstream_time():
    async def go() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        clock, timeline = Clock(), list[str]()
        model = ScriptedModel(clock, timeline, [(0.250, "first "), (0.300, "second "),
                                                (0.400, "third")])
        emit = Emit(timeline)
        result = await complete(model, REQUEST, emit, flush_ms=10, clock=clock)
        return emit.events, result

    events, result = asyncio.run(go())
    deltas = [d for t, d in events if t == "delta"]
    assert deltas[0] == {"text": "first ", "upstream_ttft_ms": 250.0}
    assert deltas[1:] == [{"text": "second "}, {"text": "third"}]
    assert result["ttft_ms"] == 250.0
    assert result["upstream_ms"] == result["duration_ms"] == 400.0
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_a_whole_answer_publishes_no_delta_and_checks_for_cancellation_every_interval():
    checks: list[float] = []

    async def go() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        clock, timeline = Clock(), list[str]()
        # 0.4 s of words, one every 0.04 s: a cancel check every 0.1 s, not every word.
        model = ScriptedModel(clock, timeline, words(10, 0.04))

        async def is_cancelled() -> bool:
            checks.append(round(clock.now - 100.0, 3))
            return False

        emit = Emit(timeline)
        result = await complete(model, REQUEST, emit, stream_events=False,
                                is_cancelled=is_cancelled, clock=clock)
        return emit.events, result

    events, result = asyncio.run(go())
    assert events == []
    assert result["content"] == "".join(f"w{i} " for i in range(10))
    assert checks == [0.12, 0.24, 0.36]


def test_a_whole_answer_stops_with_job_cancelled_once_the_job_is_cancelled():
    async def go() -> tuple[ScriptedModel, Emit, bool]:
        clock, timeline = Clock(), list[str]()
        model = ScriptedModel(clock, timeline, words(50, 0.04))
        emit = Emit(timeline)

        async def is_cancelled() -> bool:
            return model.yielded >= 5

        with pytest.raises(JobCancelled):
            await complete(model, REQUEST, emit, stream_events=False,
                           is_cancelled=is_cancelled, clock=clock)
        # Asked before asyncio.run's own clean-up could close the model's stream.
        return model, emit, model.closed

    model, emit, closed = asyncio.run(go())
    assert emit.events == []
    assert closed
    assert model.yielded < 10


def test_a_cancel_reported_by_a_publish_stops_the_stream_and_closes_the_models_iterator():
    async def go() -> tuple[ScriptedModel, bool]:
        clock, timeline = Clock(), list[str]()
        model = ScriptedModel(clock, timeline, words(50, 0.02))
        with pytest.raises(JobCancelled):
            await complete(model, REQUEST, Emit(timeline, cancel_at=2), flush_ms=10,
                           clock=clock)
        return model, model.closed

    model, closed = asyncio.run(go())
    assert closed
    # Two deltas (one word each, 20 ms apart) and not a word more was asked for.
    assert model.yielded == 2


def test_a_cancel_reported_by_a_deadline_flush_closes_the_model_waiting_for_its_next_chunk():
    async def go() -> tuple[list[str], bool]:
        clock, timeline = Clock(), list[str]()
        # "b" is published by the deadline while the model is stalled: the cancel arrives
        # with a read of the next chunk still pending.
        model = ScriptedModel(clock, timeline, [(0.05, "a"), (0.051, "b"), STALL,
                                                (0.5, "c")])
        with pytest.raises(JobCancelled):
            await _with_watchdog(model, complete(model, REQUEST, Emit(timeline, cancel_at=2),
                                                 flush_ms=10, clock=clock))
        return timeline, model.closed

    timeline, closed = asyncio.run(go())
    assert closed
    assert timeline == ["delta:a", "stalled", "delta:b", "closed"]


def test_tool_call_fragments_go_out_at_once_and_assemble_into_the_result():
    class ToolModel:
        async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
            yield ChatChunk(tool_calls=[ToolCallDelta(index=0, id="call_1", name="get")])
            yield ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments='{"a": ')])
            yield ChatChunk(tool_calls=[ToolCallDelta(index=0, arguments="1}")])
            yield ChatChunk(finish_reason="tool_calls")

    async def go() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        emit = Emit([])
        # A window far longer than the stream: only "at once" can publish each fragment.
        result = await complete(ToolModel(), REQUEST, emit, flush_ms=60_000)
        return emit.events, result

    events, result = asyncio.run(go())
    assert [d["tool_calls"] for t, d in events if t == "delta"] == [
        [{"index": 0, "id": "call_1", "name": "get"}],
        [{"index": 0, "arguments": '{"a": '}],
        [{"index": 0, "arguments": "1}"}],
    ]
    assert result["tool_calls"] == [{"id": "call_1", "type": "function",
                                     "function": {"name": "get", "arguments": '{"a": 1}'}}]
    assert result["finish_reason"] == "tool_calls"


def test_the_coalescing_window_widens_with_the_streams_a_process_holds_up_to_its_cap():
    from pipelines.chat import flush_window_ms

    assert flush_window_ms(10, 100, 1) == 10
    assert flush_window_ms(10, 100, 50) == 10
    assert flush_window_ms(10, 100, 200) == 40
    assert flush_window_ms(10, 100, 500) == 100
    assert flush_window_ms(10, 100, 5000) == 100
    # A cap below the base never narrows the configured window.
    assert flush_window_ms(10, 5, 500) == 10
