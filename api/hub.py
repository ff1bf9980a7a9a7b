"""ONE Redis pub/sub connection per API process, fanned out to per-listener queues.

Every SSE or WebSocket client following a job gets an asyncio queue here instead of a Redis
connection. `subscribe` returns only once Redis has confirmed the subscription, so a caller
that then replays the stream backlog cannot miss an event published in between. If the
connection drops, every listener receives `RESYNC` and replays from its last event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis

from pipelines.log_throttle import RECONNECT_LOG_INTERVAL_S, Throttle

log = logging.getLogger("switchyard.hub")

_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0

RESYNC = object()


class Hub:
    def __init__(self, redis: Redis, control_channel: str,
                 parse: Callable[[str, bytes], Any]) -> None:
        self._redis = redis
        self._control = control_channel
        self._parse = parse
        self._pubsub = redis.pubsub()
        self._listeners: dict[str, set[asyncio.Queue[Any]]] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._keys: dict[str, str] = {}
        # Process-wide subscriptions (e.g. auth revocations): channel -> handler.
        self._watchers: dict[str, Callable[[bytes | None], None]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, channel: str, handler: Callable[[bytes | None], None]) -> None:
        """Call `handler(data)` for each message on `channel` while the hub runs, and
        `handler(None)` after the connection was lost (messages may have been missed).
        Register before `start`; the handler runs on the reader task, so it must be quick."""
        self._watchers[channel] = handler

    async def start(self) -> None:
        # A permanent subscription keeps the connection in subscribed mode even when no
        # client is listening, so the reader loop never has to stop and restart.
        await self._pubsub.subscribe(self._control, *self._watchers)
        # redis-py reconnects and resubscribes inside get_message when the connection
        # drops (its retry policy), so `_run` may never see the error: be told of every
        # reconnect, since messages published in the gap were missed.
        assert self._pubsub.connection is not None
        self._pubsub.connection.register_connect_callback(self._reconnected)
        self._task = asyncio.create_task(self._run(), name="pubsub-hub")

    async def _reconnected(self, connection: Any) -> None:
        for handler in self._watchers.values():
            handler(None)
        for listeners in self._listeners.values():
            for queue in listeners:
                queue.put_nowait(RESYNC)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()

    @property
    def listener_count(self) -> int:
        return sum(len(q) for q in self._listeners.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, key: str) -> AsyncIterator[asyncio.Queue[Any]]:
        """Listen on `channel`; messages arrive parsed (with `key`) on the yielded queue."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        listeners = self._listeners.get(channel)
        first = listeners is None
        if listeners is None:
            self._listeners[channel] = {queue}
            waiter = self._confirmed.get(channel)
            if waiter is None or waiter.done():
                waiter = asyncio.get_running_loop().create_future()
                self._confirmed[channel] = waiter
        else:
            listeners.add(queue)
            waiter = self._confirmed[channel]
        self._keys[channel] = key
        try:
            # Inside the try: a SUBSCRIBE that fails (Redis down) must not leave a listener.
            if first:
                await self._pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(waiter), timeout=10)
            yield queue
        finally:
            listeners = self._listeners.get(channel)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[channel]
                    self._confirmed.pop(channel, None)
                    self._keys.pop(channel, None)
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        # While Redis is down every attempt fails at once: wait longer each time, and log
        # one warning per interval rather than one per attempt.
        retry_s = _RETRY_MIN_S
        warnings = Throttle(RECONNECT_LOG_INTERVAL_S)
        while True:
            try:
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if (held := warnings.allow()) is not None:
                    log.warning("pub/sub connection lost (%r); resubscribing", exc,
                                extra={"repeats_suppressed": held})
                await asyncio.sleep(retry_s)
                try:
                    await self._pubsub.subscribe(self._control, *self._watchers,
                                                 *self._listeners)
                    retry_s = _RETRY_MIN_S
                except Exception:
                    retry_s = min(2 * retry_s, _RETRY_MAX_S)
                for handler in self._watchers.values():
                    handler(None)
                for listeners in self._listeners.values():
                    for queue in listeners:
                        queue.put_nowait(RESYNC)

    async def _read_forever(self) -> None:
        pubsub = self._pubsub
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            if kind == "message" and channel in self._watchers:
                self._watchers[channel](message["data"])
            elif kind == "message":
                listeners = self._listeners.get(channel)
                if listeners:
                    try:
                        item = self._parse(self._keys.get(channel, ""), message["data"])
                    except Exception:
                        log.exception("dropping unparsable message on %s", channel)
                        continue
                    for queue in listeners:
                        queue.put_nowait(item)
            elif kind == "subscribe":
                waiter = self._confirmed.get(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
