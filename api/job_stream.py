"""One job's events at the edge, and the rules every answer made from a job shares.

A `JobStream` listens on the job's pub/sub channel through the hub (one Redis connection
per process). For a job it creates, it subscribes *before* submitting, so every event
arrives live and the Redis Stream backlog is never read; following an existing job
(`Last-Event-ID`), it subscribes, replays the backlog after that id exactly once, then
follows live events, dropping ids it already replayed. The hub's `RESYNC` (its connection
dropped) replays from the last id the same way.

The rules, in one place:
- the first *decisive* item (output, the job's end, or a keep-alive for a slow start)
  decides an answer's HTTP status (`opening`), so SDKs see a 429 or a 504 as such;
- a `retry` after answer content was sent ends the answer with `INTERRUPTED`: a second
  attempt spliced onto the first would corrupt it;
- keep-alives tick after `keepalive_s` of silence; the stream ends after `lifetime_s`;
- a job's end becomes a failure in one place (`failure_of` in schemas/events.py), and
  the stream's own ends (`TIMED_OUT`, `INTERRUPTED`) are made here;
- a stream closed before the job ended calls `on_abandon` — chat routes cancel the job
  there (nobody is left to read it), own-format replies pass None (the result is kept).

Writers (api/formats/writer.py) render what the stream yields in one wire format; the
stream never validates events, it relays the dicts workers published.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from enum import Enum
from typing import Any, Protocol, TypeVar

from starlette.types import Receive

from api.formats.writer import Writer
from api.hub import RESYNC
from pipelines.events import stream_id_key
from pipelines.keys import Keys
from schemas.events import JobFailure, chat_result, delta
from schemas.jobs import Event

Out = TypeVar("Out")

_BACKLOG_PAGE = 1000
# Put on the stream's queue by the disconnect watcher.
_GONE = object()

TIMED_OUT: JobFailure = {"code": "UPSTREAM_TIMEOUT", "status": 504,
                         "message": "The job did not finish in time."}
INTERRUPTED: JobFailure = {"code": "UPSTREAM_ERROR", "status": 502,
                           "message": "The answer was interrupted because its job is being "
                                      "retried; ask again."}


class Tick(Enum):
    """What a stream yields when it has no event to give."""

    KEEPALIVE = "keep-alive"  # nothing happened for keepalive_s
    EXPIRED = "expired"  # the stream's lifetime ran out before the job ended
    CLIENT_GONE = "client gone"  # the HTTP client hung up (see watch_disconnect)
    OVER = "over"  # resumed after the job's final event: nothing more will come


class Subscriber(Protocol):
    """The hub: subscriptions that deliver parsed events onto a queue."""

    def subscribe(self, channel: str,
                  key: str) -> AbstractAsyncContextManager[asyncio.Queue[Any]]: ...


class Backlog(Protocol):
    """The reading half of the event log (pipelines.events.AsyncEventLog)."""

    keys: Keys

    async def backlog(self, job_id: str, after: str | None = None,
                      count: int = 1000) -> list[Event]: ...

    async def last_event(self, job_id: str) -> Event | None: ...


class JobStream:
    """One job's events, in order and exactly once, with keep-alive and end ticks."""

    def __init__(self, hub: Subscriber, log: Backlog, job_id: str, *, keepalive_s: float,
                 lifetime_s: float, on_abandon: Callable[[str], None] | None = None,
                 started_at: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`on_abandon(reason)` runs when the stream closes before the job ended;
        `started_at` (a `clock` reading) makes the stream measure `overhead_ms`."""
        self.job_id = job_id
        self.overhead_ms: float | None = None
        self._hub = hub
        self._log = log
        self._keepalive_s = keepalive_s
        self._deadline = time.monotonic() + lifetime_s
        self._on_abandon = on_abandon
        self._started_at = started_at
        self._clock = clock
        self._exit = AsyncExitStack()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: deque[Event | Tick] = deque()
        self._replaying = False
        self._check_log_end = False
        self._stand_in: Callable[[], Awaitable[Event | None]] | None = None
        self._last_id: str | None = None
        # Live events at or below this (ms, seq) were replayed already.
        self._floor: tuple[int, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ended = False
        self._closed = False
        self._abandon_reason = "client disconnected"

    @classmethod
    async def submit(cls, hub: Subscriber, log: Backlog, job_id: str,
                     submit: Callable[[], Awaitable[object]], **options: Any) -> JobStream:
        """Subscribe to `job_id`, then `submit()` the job: every event arrives live."""
        stream = cls(hub, log, job_id, **options)
        await stream._subscribe()
        try:
            await submit()
        except BaseException:
            stream._ended = True  # no job, nothing to abandon
            await stream.close()
            raise
        return stream

    @classmethod
    async def resume(cls, hub: Subscriber, log: Backlog, job_id: str, *, after: str | None,
                     stand_in: Callable[[], Awaitable[Event | None]] | None = None,
                     **options: Any) -> JobStream:
        """Follow an existing job from after event `after` (None: from its first event).

        `stand_in()` makes a terminal event for a job whose log expired (or never existed):
        without it a client of a long-finished job would wait for the stream's lifetime.
        """
        stream = cls(hub, log, job_id, **options)
        await stream._subscribe()
        stream._last_id = after
        stream._replaying = stream._check_log_end = True
        stream._stand_in = stand_in
        return stream

    async def _subscribe(self) -> None:
        self._queue = await self._exit.enter_async_context(
            self._hub.subscribe(self._log.keys.channel(self.job_id), self.job_id))

    def watch_disconnect(self, receive: Receive) -> None:
        """Notice an HTTP client hanging up (its body already read) while the stream waits.

        Servers tell an app about a disconnect only through `receive()`, never by
        cancelling it; without this a whole answer would wait out its job for nobody.
        """

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self._queue.put_nowait(_GONE)

        self._watcher = asyncio.get_running_loop().create_task(watch())

    async def opening(self) -> Event | Tick:
        """Read up to the first decisive item — output, the job's end or a tick — and keep
        what was read for `frames`. The item decides an answer's HTTP status."""
        held: list[Event | Tick] = []
        while True:
            item = await self._read()
            held.append(item)
            if isinstance(item, Tick) or item.type == "delta" or self._is_end(item):
                break
        self._pending.extendleft(reversed(held))
        if isinstance(item, Tick):
            self._end_with(item)
        else:
            self._ended = item.terminal
            self._measure(item)
        return item

    async def outcome(self) -> Event | Tick:
        """The job's terminal event, or the tick that ended the wait (EXPIRED, CLIENT_GONE,
        OVER); the stream is closed afterwards."""
        try:
            while True:
                item = await self._read()
                if isinstance(item, Tick):
                    if item is not Tick.KEEPALIVE:
                        self._end_with(item)
                        return item
                elif self._is_end(item):
                    self._ended = True
                    self._measure(item)
                    return item
        finally:
            await self.close()

    async def frames(self, writer: Writer[Out]) -> AsyncIterator[Out]:
        """The stream rendered by `writer`, until the job's end, an error or the lifetime."""
        try:
            if (out := writer.opening()) is not None:
                yield out
            while True:
                item = await self._read()
                if isinstance(item, Tick):
                    if item is Tick.KEEPALIVE:
                        if (out := writer.keepalive()) is not None:
                            yield out
                        continue
                    self._end_with(item)
                    if item is Tick.EXPIRED and (out := writer.error(TIMED_OUT)) is not None:
                        yield out
                    return
                if item.type == "retry" and writer.sent_content:
                    self._abandon_reason = "the answer was interrupted by a retry"
                    if (out := writer.error(INTERRUPTED)) is not None:
                        yield out
                    return
                if self._is_end(item):
                    self._ended = True
                    if (out := writer.terminal(item)) is not None:
                        yield out
                    return
                if (out := writer.event(item)) is not None:
                    yield out
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening; if the job has not ended, call `on_abandon` first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._ended and self._on_abandon is not None:
            self._on_abandon(self._abandon_reason)
        if self._watcher is not None:
            self._watcher.cancel()
        await self._exit.aclose()

    def _is_end(self, event: Event) -> bool:
        # A terminal event in the middle of a replay is not the end: a job retried after
        # failing or being cancelled has its new attempt's events after it.
        return event.terminal and not self._pending

    def _end_with(self, tick: Tick) -> None:
        if tick is Tick.OVER:
            self._ended = True
        elif tick is Tick.EXPIRED:
            self._abandon_reason = "timed out"

    def _measure(self, event: Event) -> None:
        """Time spent in Switchyard up to `event`, upstream time excluded: at the first
        delta, less the upstream's time to first token; at a success, less its whole time."""
        if self._started_at is None:
            return
        upstream: object = None
        if event.type == "delta":
            upstream = delta(event).get("upstream_ttft_ms")
        elif event.type == "succeeded" and isinstance(event.data.get("result"), dict):
            upstream = chat_result(event).get("upstream_ms")
        if isinstance(upstream, int | float):
            elapsed_ms = (self._clock() - self._started_at) * 1000
            self.overhead_ms = max(0.0, elapsed_ms - upstream)

    async def _read(self) -> Event | Tick:
        # Keep one replayed event in hand until the next page is read, so `_is_end` can
        # tell the log's last event from one in the middle.
        while self._replaying and len(self._pending) <= 1:
            await self._replay_page()
        if self._pending:
            return self._pending.popleft()
        queue = self._queue
        while True:
            try:
                # Events usually arrive in bursts: take what is queued without arming a
                # timer, which costs more than the rest of this loop.
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return Tick.EXPIRED
                try:
                    item = await asyncio.wait_for(queue.get(),
                                                  timeout=min(self._keepalive_s, remaining))
                except TimeoutError:
                    return Tick.KEEPALIVE
            if isinstance(item, Event):
                if self._floor is not None:
                    if stream_id_key(item.id) <= self._floor:
                        continue
                    self._floor = None
                self._last_id = item.id
                return item
            if item is _GONE:
                return Tick.CLIENT_GONE
            if item is RESYNC:
                self._replaying = True
                return await self._read()

    async def _replay_page(self) -> None:
        batch = await self._log.backlog(self.job_id, after=self._last_id, count=_BACKLOG_PAGE)
        if batch:
            self._pending.extend(batch)
            self._last_id = batch[-1].id
            self._floor = stream_id_key(self._last_id)
        if len(batch) < _BACKLOG_PAGE:
            self._replaying = False
        if self._check_log_end:
            self._check_log_end = False
            if not batch:
                await self._check_nothing_new()

    async def _check_nothing_new(self) -> None:
        """Nothing after the client's last id: the job's log expired, or it already ended."""
        newest = await self._log.last_event(self.job_id)
        if newest is None:
            stand_in = await self._stand_in() if self._stand_in is not None else None
            if stand_in is not None:
                self._pending.append(stand_in)
        elif newest.terminal and self._last_id is not None and (
            stream_id_key(newest.id) <= stream_id_key(self._last_id)
        ):
            self._pending.append(Tick.OVER)
