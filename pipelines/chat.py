"""One chat completion: stream it from a provider as `delta` events and return the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipelines.errors import JobCancelled, UpstreamTimeout, UpstreamUnavailable
from pipelines.ports import ChatModel, Emit, ToolCallDelta, Usage

log = logging.getLogger("switchyard.chat")


def complete(
    model: ChatModel,
    request: dict[str, Any],
    emit: Emit,
    *,
    flush_ms: float = 10.0,
    count_tokens: Callable[[dict[str, Any], str], Usage] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Stream `request` through `model` as deltas; stop as soon as a publish says cancelled.

    Text that arrives faster than `flush_ms` is coalesced into one delta, so a fast model
    costs one Redis round trip per flush instead of one per token; the first token and every
    tool call or finish are published at once.
    """
    flush_s = flush_ms / 1000
    started = clock()
    first_token_at: float | None = None
    last_flush = float("-inf")
    text: list[str] = []
    pending_text: list[str] = []
    pending_tools: list[dict[str, Any]] = []
    calls: dict[int, dict[str, Any]] = {}
    usage: Usage | None = None
    finish_reason: str | None = None

    def flush() -> None:
        nonlocal last_flush
        data: dict[str, Any] = {}
        if pending_text:
            data["text"] = "".join(pending_text)
        if pending_tools:
            data["tool_calls"] = list(pending_tools)
        pending_text.clear()
        pending_tools.clear()
        last_flush = clock()
        if data and emit("delta", data):
            raise JobCancelled("The job was cancelled.")

    stream = model.stream(request)
    try:
        for chunk in stream:
            if chunk.text or chunk.tool_calls:
                if first_token_at is None:
                    first_token_at = clock()
                if chunk.text:
                    text.append(chunk.text)
                    pending_text.append(chunk.text)
                for delta in chunk.tool_calls:
                    _merge_tool_call(calls, delta)
                    pending_tools.append(_tool_delta_dict(delta))
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason
            if chunk.tool_calls or clock() - last_flush >= flush_s:
                flush()
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    flush()
    content = "".join(text)
    if usage is None:
        usage = count_tokens(request, content) if count_tokens else Usage()
    finished = clock()
    return {
        "model": request.get("model"),
        "content": content,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "duration_ms": round((finished - started) * 1000, 3),
        "ttft_ms": None if first_token_at is None else round((first_token_at - started) * 1000, 3),
    }


def complete_with_fallbacks(
    candidates: Sequence[tuple[str, ChatModel]],
    request: dict[str, Any],
    emit: Emit,
    **options: Any,
) -> dict[str, Any]:
    """`complete` on the first candidate that answers; the result names it as `model`.

    A candidate that is down or times out before any output hands over to the next (its
    own retries are already spent); once output has been emitted a failure is final, since
    the caller already holds part of the first answer.
    """
    emitted = False

    def tracking_emit(type: str, data: dict[str, Any]) -> bool:
        nonlocal emitted
        emitted = True
        return emit(type, data)

    for position, (model_id, model) in enumerate(candidates):
        try:
            result = complete(model, request, tracking_emit, **options)
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            if emitted or position == len(candidates) - 1:
                raise
            log.warning("model %s failed before output (%s); falling back to %s",
                        model_id, exc, candidates[position + 1][0])
            continue
        result["model"] = model_id
        if position:
            result["fallback_from"] = candidates[0][0]
        return result
    raise ValueError("complete_with_fallbacks needs at least one candidate")


def _tool_delta_dict(delta: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": delta.index}
    if delta.id:
        out["id"] = delta.id
    if delta.name:
        out["name"] = delta.name
    if delta.arguments:
        out["arguments"] = delta.arguments
    return out


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: ToolCallDelta) -> None:
    call = calls.setdefault(
        delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if delta.id:
        call["id"] = delta.id
    if delta.name:
        call["function"]["name"] += delta.name
    call["function"]["arguments"] += delta.arguments
