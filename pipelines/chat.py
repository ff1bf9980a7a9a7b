"""One chat completion: stream it from a provider as `delta` events and return the result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from pipelines import metrics
from pipelines.errors import JobCancelled, UpstreamTimeout, UpstreamUnavailable
from pipelines.ports import ChatChunk, ChatModel, Emit, ToolCallDelta, Usage

log = logging.getLogger("switchyard.chat")

# How often a job whose client wants the whole answer (no per-token events) looks at its
# cancel flag while the model streams.
CANCEL_CHECK_INTERVAL_S = 0.1


STREAMS_PER_FLUSH_STEP = 50


def flush_window_ms(base_ms: float, max_ms: float, concurrent_streams: int) -> float:
    """The coalescing window for a stream started while `concurrent_streams` run in its process.

    Every event costs the same Python time to publish and to relay whatever it carries, so a
    process holding many streams spends most of its time on per-token events. Widening the
    window with the load (like Nagle's algorithm) keeps that cost flat: `base_ms` up to 50
    streams, then proportionally more, up to `max_ms`. The first token is never held back.
    """
    widened = base_ms * max(1.0, concurrent_streams / STREAMS_PER_FLUSH_STEP)
    return min(max(max_ms, base_ms), widened)


class _Coalescer:
    """Text, reasoning and tool-call fragments waiting to go out as one `delta` event."""

    __slots__ = ("text", "tools", "reasoning", "first_sent", "upstream_ttft_ms")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tools: list[dict[str, Any]] = []
        self.reasoning: list[str] = []
        self.first_sent = False
        self.upstream_ttft_ms: float | None = None

    def __bool__(self) -> bool:
        return bool(self.text or self.tools or self.reasoning)

    def take(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.text:
            data["text"] = "".join(self.text)
            self.text.clear()
        if self.reasoning:
            data["reasoning"] = "".join(self.reasoning)
            self.reasoning.clear()
        if self.tools:
            data["tool_calls"] = list(self.tools)
            self.tools.clear()
        if not self.first_sent and self.upstream_ttft_ms is not None:
            # Lets the API tell its own overhead from the upstream's (X-Switchyard-Overhead-Ms).
            data["upstream_ttft_ms"] = self.upstream_ttft_ms
        self.first_sent = True
        return data


async def complete(
    model: ChatModel,
    request: dict[str, Any],
    emit: Emit,
    *,
    flush_ms: float = 10.0,
    stream_events: bool = True,
    is_cancelled: Callable[[], Awaitable[bool]] | None = None,
    count_tokens: Callable[[dict[str, Any], str], Usage] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Stream `request` through `model` as deltas; stop as soon as a publish says cancelled.

    Text that arrives within `flush_ms` of the last delta is coalesced into one delta, sent
    when the window closes even if no further chunk arrives (a deadline, not "on the next
    chunk"), so a fast model costs one Redis round trip per window instead of one per token
    and the last token of a burst is never held back. The first token and every tool call
    or finish go out at once. With `stream_events` off (the client wants the whole answer)
    no delta is published at all; `is_cancelled` is then polled every
    CANCEL_CHECK_INTERVAL_S instead.
    """
    flush_s = flush_ms / 1000
    started = clock()
    first_token_at: float | None = None
    last_flush = float("-inf")
    last_cancel_check = started
    text: list[str] = []
    reasoning: list[str] = []
    pending = _Coalescer()
    calls: dict[int, dict[str, Any]] = {}
    usage: Usage | None = None
    finish_reason: str | None = None

    async def flush() -> None:
        nonlocal last_flush
        last_flush = clock()
        if pending and await emit("delta", pending.take()):
            raise JobCancelled("The job was cancelled.")

    chunks = model.stream(request)
    upcoming: asyncio.Future[ChatChunk] | None = None
    try:
        while True:
            if pending and upcoming is None:
                upcoming = asyncio.ensure_future(_next(chunks))
            if upcoming is not None:
                if pending:
                    # Something waits for its window to close: wait for the next chunk
                    # only until then, and flush on the deadline.
                    wait_s = last_flush + flush_s - clock()
                    if wait_s > 0:
                        await asyncio.wait((upcoming,), timeout=wait_s)
                    if not upcoming.done():
                        await flush()
                        continue
                chunk = await upcoming
                upcoming = None
            else:
                chunk = await _next(chunks)
            if chunk is _END:
                break
            if chunk.text or chunk.tool_calls or chunk.reasoning:
                if first_token_at is None:
                    first_token_at = clock()
                    pending.upstream_ttft_ms = round((first_token_at - started) * 1000, 3)
                if chunk.text:
                    text.append(chunk.text)
                if chunk.reasoning:
                    reasoning.append(chunk.reasoning)
                    if stream_events:
                        pending.reasoning.append(chunk.reasoning)
                for delta in chunk.tool_calls:
                    _merge_tool_call(calls, delta)
                if stream_events:
                    if chunk.text:
                        pending.text.append(chunk.text)
                    pending.tools.extend(_tool_delta_dict(delta) for delta in chunk.tool_calls)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason
            if stream_events:
                if chunk.tool_calls or clock() - last_flush >= flush_s:
                    await flush()
            elif is_cancelled is not None and clock() - last_cancel_check >= \
                    CANCEL_CHECK_INTERVAL_S:
                last_cancel_check = clock()
                if await is_cancelled():
                    raise JobCancelled("The job was cancelled.")
    finally:
        if upcoming is not None:
            # The generator cannot be closed while a read is under way in that task.
            upcoming.cancel()
            await asyncio.wait((upcoming,))
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    await flush()
    content = "".join(text)
    if usage is None:
        usage = count_tokens(request, content) if count_tokens else Usage()
    finished = clock()
    duration_ms = round((finished - started) * 1000, 3)
    result: dict[str, Any] = {
        "model": request.get("model"),
        "content": content,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "duration_ms": duration_ms,
        "ttft_ms": None if first_token_at is None else round((first_token_at - started) * 1000, 3),
        # Time spent on the model itself, for the API's overhead header: the whole stream,
        # from asking to the last chunk (publishing happens in between and is ours, but a
        # coalesced publish costs well under a token's gap).
        "upstream_ms": duration_ms,
    }
    if reasoning:
        # Only when the model reasoned out loud: other results keep their shape.
        result["reasoning"] = "".join(reasoning)
    return result


_END: Any = ChatChunk()


async def _next(chunks: AsyncIterator[ChatChunk]) -> ChatChunk:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return _END  # type: ignore[no-any-return]


async def complete_with_fallbacks(
    candidates: Sequence[tuple[str, ChatModel]],
    request: dict[str, Any],
    emit: Emit,
    *,
    request_for: Callable[[str], dict[str, Any]] | None = None,
    providers: Mapping[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`complete` on the first candidate that answers; the result names it as `model`.

    `request_for(model_id)`, when given, adapts the request to each candidate (its own
    output-token cap, say). `providers` (model id -> provider) labels the upstream-error
    metric of a candidate that fails.

    A candidate that is down or times out before any output hands over to the next (its
    own retries are already spent); once output has been emitted a failure is final, since
    the caller already holds part of the first answer.
    """
    emitted = False

    async def tracking_emit(type: str, data: dict[str, Any]) -> bool:
        nonlocal emitted
        emitted = True
        return await emit(type, data)

    for position, (model_id, model) in enumerate(candidates):
        try:
            asked = request_for(model_id) if request_for is not None else request
            result = await complete(model, asked, tracking_emit, **options)
        except JobCancelled:
            raise
        except Exception as exc:
            metrics.upstream_errors((providers or {}).get(model_id, "unknown"), model_id,
                                    metrics.error_code(exc)).inc()
            if not isinstance(exc, UpstreamUnavailable | UpstreamTimeout) or emitted or (
                    position == len(candidates) - 1):
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
