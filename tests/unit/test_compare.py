"""Comparison runs every model at once and reports each one's answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pipelines.compare import compare, cost_usd, model_request
from pipelines.errors import JobCancelled, ModelNotFound, UpstreamError, UpstreamUnavailable
from pipelines.ports import ChatChunk, ChatModel, Usage


class FakeModel:
    """Streams `words`, each after `delay_s`; optionally raises after them."""

    def __init__(self, words: list[str], delay_s: float = 0.0,
                 fail: Exception | None = None, barrier: asyncio.Barrier | None = None):
        self.words = words
        self.delay_s = delay_s
        self.fail = fail
        self.barrier = barrier
        self.requests: list[dict[str, Any]] = []
        self.closed = False

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        self.requests.append(request)
        try:
            if self.barrier is not None:
                # Every model must be streaming at once for any of them to pass: run one
                # after another, the first would wait here until the timeout.
                async with asyncio.timeout(5):
                    await self.barrier.wait()
            for word in self.words:
                await asyncio.sleep(self.delay_s)
                yield ChatChunk(text=word)
            if self.fail is not None:
                raise self.fail
            yield ChatChunk(finish_reason="stop",
                            usage=Usage(prompt_tokens=7, completion_tokens=len(self.words)))
        finally:
            self.closed = True


class Recorder:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.cancel_after = cancel_after

    async def __call__(self, type: str, data: dict[str, Any]) -> bool:
        self.events.append((type, data))
        return self.cancel_after is not None and len(self.events) >= self.cancel_after


def spec(*models: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": "Say hi", "models": list(models), **extra}


def lookup(models: dict[str, FakeModel]) -> Callable[[str], Awaitable[ChatModel]]:
    async def chat_model_for(model_id: str) -> ChatModel:
        if model_id not in models:
            raise ModelNotFound(f"The model '{model_id}' does not exist.")
        return models[model_id]
    return chat_model_for


def run(spec: dict[str, Any], models: dict[str, FakeModel], emit: Recorder,
        **options: Any) -> dict[str, Any]:
    return asyncio.run(compare(spec, lookup(models), emit, **options))


def test_every_model_runs_concurrently_and_results_keep_the_requested_order():
    async def go() -> dict[str, Any]:
        # The barrier lets no model stream until all three are running at once.
        barrier = asyncio.Barrier(3)
        models = {name: FakeModel([f"{name} ", "ok"], barrier=barrier)
                  for name in ("a", "b", "c")}
        return await compare(spec("c", "a", "b"), lookup(models), Recorder())

    result = asyncio.run(go())
    assert [r["model"] for r in result["results"]] == ["c", "a", "b"]
    assert [r["response"] for r in result["results"]] == ["c ok", "a ok", "b ok"]
    # A model that timed out at the barrier would report an error instead of its answer.
    assert all(r["error"] is None for r in result["results"])


def test_each_result_reports_tokens_timings_and_cost_from_the_prices():
    models = {"a": FakeModel(["x ", "y"], delay_s=0.01), "b": FakeModel(["z"])}
    prices = {"a": (2.0, 10.0)}
    result = run(spec("a", "b"), models, Recorder(),
                 prices_for=lambda model_id: prices.get(model_id))
    a, b = result["results"]
    assert a["tokens"] == {"prompt": 7, "completion": 2}
    assert a["cost_usd"] == pytest.approx((7 * 2.0 + 2 * 10.0) / 1_000_000)
    assert b["cost_usd"] == 0.0
    assert a["ttft_ms"] is not None and a["duration_ms"] >= a["ttft_ms"] > 0
    assert a["finish_reason"] == "stop"
    assert result["duration_ms"] >= a["duration_ms"]


def test_a_failing_model_reports_its_error_and_the_others_still_answer():
    models = {
        "good": FakeModel(["fine"]),
        "broken": FakeModel(["half "], fail=UpstreamError("upstream said no", status=502)),
        "down": FakeModel([], fail=UpstreamUnavailable("connection refused")),
        "buggy": FakeModel([], fail=RuntimeError("secret-url http://k@x")),
    }
    result = run(spec("good", "broken", "down", "buggy"), models, Recorder())
    by_model = {r["model"]: r for r in result["results"]}
    assert by_model["good"]["response"] == "fine" and by_model["good"]["error"] is None
    assert by_model["broken"]["error"] == {"code": "UPSTREAM_ERROR",
                                           "message": "upstream said no"}
    assert by_model["down"]["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert by_model["buggy"]["error"] == {"code": "PROCESSING_ERROR",
                                          "message": "The model failed with an internal error."}
    assert all(by_model[m]["cost_usd"] == 0.0 for m in ("broken", "down", "buggy"))


def test_an_unknown_model_is_an_error_in_its_own_result():
    result = run(spec("a", "nope"), {"a": FakeModel(["hi"])}, Recorder())
    assert result["results"][1]["error"]["code"] == "MODEL_NOT_FOUND"
    assert result["results"][0]["response"] == "hi"


def test_events_are_tagged_with_their_model_and_bracketed_by_steps():
    recorder = Recorder()
    run(spec("a", "b"), {"a": FakeModel(["1 ", "2"]), "b": FakeModel(["3"])}, recorder)
    for index, name in enumerate(("a", "b")):
        mine = [(t, d) for t, d in recorder.events if d["model"] == name]
        assert all(d["index"] == index for _, d in mine)
        assert mine[0][0] == "step_started" and mine[-1][0] == "step_completed"
        text = "".join(d.get("text", "") for t, d in mine if t == "delta")
        assert text == {"a": "1 2", "b": "3"}[name]
        assert mine[-1][1]["result"]["response"] == text


def test_a_cancelled_comparison_stops_every_model_and_raises():
    models = {name: FakeModel(["w "] * 50, delay_s=0.001) for name in ("a", "b")}
    recorder = Recorder(cancel_after=5)
    with pytest.raises(JobCancelled):
        run(spec("a", "b"), models, recorder, flush_ms=0)
    # Both streams were closed long before their 50 words, and no step was reported done.
    assert all(model.closed for model in models.values())
    deltas = [d for t, d in recorder.events if t == "delta"]
    assert len(deltas) < 10
    assert "step_completed" not in [t for t, _ in recorder.events]


def test_the_request_per_model_carries_the_system_prompt_and_knobs():
    request = model_request(spec("a", "b", system_prompt="Be terse.", max_tokens=3,
                                 dev_options={"token_delay_ms": 5}), "a")
    assert request == {"model": "a", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hi"}],
        "max_tokens": 3, "dev_options": {"token_delay_ms": 5}}


def test_cost_is_zero_without_prices_and_per_million_tokens_with_them():
    assert cost_usd(1000, 1000, None) == 0.0
    assert cost_usd(1_000_000, 500_000, (3.0, 15.0)) == pytest.approx(10.5)
