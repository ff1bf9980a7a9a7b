"""Model comparison: the same prompt to every model at once, each answer measured and priced.

Each model streams concurrently (one task per model on the worker's event loop) through
`chat.complete`, with an emit wrapper that tags its events with the model, so a follower
can tell the streams apart. One model's
failure is reported in its own result and never fails the comparison; a cancellation
stops every model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pipelines import chat
from pipelines.errors import DomainError, JobCancelled, UpstreamUnavailable
from pipelines.ports import ChatModel, Emit

log = logging.getLogger("switchyard.compare")

# (input, output) USD per million tokens; None when the model has no known price.
PriceLookup = Callable[[str], tuple[float, float] | None]

_REQUEST_FIELDS = ("max_tokens", "temperature", "dev_options")


def model_request(spec: dict[str, Any], model_id: str,
                  cap: int | None = None) -> dict[str, Any]:
    """The OpenAI chat body one model of the comparison receives, within its output `cap`."""
    messages: list[dict[str, Any]] = []
    if spec.get("system_prompt"):
        messages.append({"role": "system", "content": spec["system_prompt"]})
    messages.append({"role": "user", "content": spec["prompt"]})
    request: dict[str, Any] = {"model": model_id, "messages": messages}
    for name in _REQUEST_FIELDS:
        if spec.get(name) is not None:
            request[name] = spec[name]
    if cap is not None:
        request["max_tokens"] = min(int(request.get("max_tokens") or cap), cap)
    return request


def cost_usd(prompt_tokens: int, completion_tokens: int,
             prices: tuple[float, float] | None) -> float:
    """Price of one answer from per-million-token prices; unknown prices cost 0."""
    if prices is None:
        return 0.0
    input_price, output_price = prices
    return round((prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000,
                 10)


def tagged(emit: Emit, model_id: str, index: int, cancelled: asyncio.Event) -> Emit:
    """An emit that labels every event with its model, and remembers a cancellation."""

    async def emit_for_model(type: str, data: dict[str, Any]) -> bool:
        if await emit(type, {**data, "model": model_id, "index": index}):
            cancelled.set()
        return cancelled.is_set()

    return emit_for_model


async def compare(
    spec: dict[str, Any],
    chat_model_for: Callable[[str], Awaitable[ChatModel]],
    emit: Emit,
    *,
    prices_for: PriceLookup | None = None,
    caps: Mapping[str, int] | None = None,
    flush_ms: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run `spec["prompt"]` on every model of `spec["models"]` concurrently; results in order.

    `caps` bounds each model's answer (its registry `max_output_tokens`)."""
    models: Sequence[str] = spec["models"]
    cancelled = asyncio.Event()
    started = clock()

    async def run(index: int, model_id: str) -> dict[str, Any]:
        model_emit = tagged(emit, model_id, index, cancelled)
        await model_emit("step_started", {})
        outcome = await _run_one(spec, model_id, chat_model_for, model_emit, prices_for,
                                 flush_ms, (caps or {}).get(model_id))
        if not cancelled.is_set():
            await model_emit("step_completed", {"result": outcome})
        return outcome

    results = list(await asyncio.gather(*(run(i, model_id)
                                          for i, model_id in enumerate(models))))
    if cancelled.is_set():
        raise JobCancelled("The job was cancelled.")
    return {"prompt": spec["prompt"], "results": results,
            "duration_ms": round((clock() - started) * 1000, 3)}


async def _run_one(spec: dict[str, Any], model_id: str,
                   chat_model_for: Callable[[str], Awaitable[ChatModel]], emit: Emit,
                   prices_for: PriceLookup | None, flush_ms: float,
                   cap: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await chat.complete(await chat_model_for(model_id),
                                     model_request(spec, model_id, cap), emit,
                                     flush_ms=flush_ms)
    except JobCancelled:
        return _failed(model_id, started, "CANCELLED", "The comparison was cancelled.")
    except DomainError as exc:
        return _failed(model_id, started, exc.code, exc.message)
    except UpstreamUnavailable as exc:
        return _failed(model_id, started, "UPSTREAM_UNAVAILABLE",
                       str(exc) or "The upstream provider is unavailable.")
    except Exception:
        # Never let one model's bug fail the others; the message stays generic because an
        # unexpected exception may carry an upstream URL or key.
        log.exception("compare: model %s failed", model_id)
        return _failed(model_id, started, "PROCESSING_ERROR",
                       "The model failed with an internal error.")
    usage = result["usage"]
    prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    prices = prices_for(model_id) if prices_for else None
    return {
        "model": model_id,
        "response": result["content"],
        "tokens": {"prompt": prompt, "completion": completion},
        "duration_ms": result["duration_ms"],
        "ttft_ms": result["ttft_ms"],
        "cost_usd": cost_usd(prompt, completion, prices),
        "finish_reason": result["finish_reason"],
        "error": None,
    }


def _failed(model_id: str, started: float, code: str, message: str) -> dict[str, Any]:
    return {
        "model": model_id, "response": "", "tokens": {"prompt": 0, "completion": 0},
        "duration_ms": round((time.perf_counter() - started) * 1000, 3), "ttft_ms": None,
        "cost_usd": 0.0, "finish_reason": None, "error": {"code": code, "message": message},
    }
