"""Dramatiq's Redis broker, with idle consumers woken by producers instead of polling.

Upstream's consumer sleeps with an exponential backoff up to the worker timeout when its
queue is empty, so a job sent to an idle worker waits up to that long before it is seen.
Here an idle consumer blocks on a per-queue wake-up list (BLPOP) that every enqueue pushes
to, so the hop from enqueue to a worker is one Redis round trip, and an idle worker costs
one blocking call per timeout instead of a poll every few milliseconds.

`release` hands a dead worker process's messages back at once. Upstream requeues a dead
consumer's fetched-but-unacked messages only when a maintenance run (1 dispatch in 1,000)
finds its heartbeat older than `heartbeat_timeout` (60 s); the supervisor that started the
process knows it died, so it calls `release` with the broker id it gave the process
(`BROKER_ID_ENV`), through Dramatiq's own dispatch.lua;
`tests/integration/test_redelivery.py` pins this against the installed Dramatiq.

An operator may pause a queue (`POST /v1/admin/queues/{name}/pause`, a Redis set): its
consumers then fetch nothing (messages already prefetched still run) and the jobs stay
queued until it is resumed; `tests/integration/test_admin_queues.py` pins it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed

from pipelines.keys import Keys
from schemas.jobs import QUEUE_PAUSE_CHECK_S

_WAKE_BACKLOG = 256
# The broker id of a worker process started by workers/supervise.py, so it can `release`.
BROKER_ID_ENV = "SWITCHYARD_BROKER_ID"
# A dispatch.lua command that changes nothing (it counts), to run the script's preamble
# (the heartbeat) and its maintenance.
_NO_OP = "qsize"


class WakeableRedisBroker(RedisBroker):
    def __init__(self, *, keys: Keys, **kwargs: Any) -> None:
        super().__init__(namespace=keys.dramatiq_namespace, **kwargs)
        self.broker_id = os.environ.get(BROKER_ID_ENV) or self.broker_id
        self.keys = keys
        self.add_middleware(_WakeOnEnqueue(keys))

    def release(self, dead_broker_id: str, queue_names: Iterable[str]) -> None:
        """Requeue the unacked messages of a dead process's broker on `queue_names` now.

        dispatch.lua stamps the caller's heartbeat with the timestamp it is given, so one
        call as the dead broker at timestamp 0 makes it the only broker past the timeout;
        maintenance on each queue (and its delay queue) then moves its messages back, as
        upstream would a minute later. Never call this for a broker that may be alive.
        """
        names = [name for queue in sorted(queue_names) for name in (queue, dq_name(queue))]
        if not names:
            return
        dispatch = self.scripts["dispatch"]
        max_unpack_size = self._max_unpack_size()

        def args(timestamp: int, queue: str, broker_id: str, maintenance: int) -> list[Any]:
            # RedisBroker._dispatch's layout (pinned by tests/unit/test_enqueue_layout.py).
            return [_NO_OP, timestamp, queue, broker_id, self.heartbeat_timeout,
                    self.dead_message_ttl, maintenance, max_unpack_size]

        pipe = self.client.pipeline(transaction=False)
        dispatch(keys=[self.namespace], args=args(0, names[0], dead_broker_id, 0), client=pipe)
        for name in names:
            dispatch(keys=[self.namespace], args=args(current_millis(), name, self.broker_id, 1),
                     client=pipe)
            pipe.lpush(self.keys.wake(name), b"1")
            pipe.ltrim(self.keys.wake(name), 0, _WAKE_BACKLOG - 1)
        pipe.execute()

    def consume(self, queue_name: str, prefetch: int = 1,
                timeout: int = 5000) -> dramatiq.Consumer:
        return _WakeableConsumer(self, queue_name, prefetch, timeout,
                                 self.keys.wake(queue_name))


class _WakeableConsumer(_RedisConsumer):
    def __init__(self, broker: WakeableRedisBroker, queue_name: str, prefetch: int,
                 timeout: int, wake_key: str) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wake_key = wake_key
        self._paused_key = broker.keys.paused_queues()
        self._paused_until = 0.0  # monotonic time the cached answer below holds until
        self._is_paused = False

    def _paused(self) -> bool:
        """Whether an operator paused this queue; asked of Redis at most every
        QUEUE_PAUSE_CHECK_S, and only when about to fetch (not per message)."""
        now = time.monotonic()
        if now >= self._paused_until:
            self._is_paused = bool(self.broker.client.sismember(self._paused_key,
                                                                self.queue_name))
            self._paused_until = now + QUEUE_PAUSE_CHECK_S
        return self._is_paused

    def __next__(self) -> Any:
        if not self.message_cache and self.outstanding_message_count < self.prefetch:
            try:
                if self._paused():
                    # Paused by an operator: take nothing, wake up now and then to look again.
                    self.broker.client.blpop([self.wake_key], timeout=QUEUE_PAUSE_CHECK_S)
                    return None
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    self.broker.client.blpop([self.wake_key], timeout=self.timeout / 1000)
                    return None
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None
        return super().__next__()


class _WakeOnEnqueue(dramatiq.Middleware):
    """Pushes a wake-up for the message's queue; delayed messages wake nobody."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message,
                      delay: int | None) -> None:
        if delay:
            return
        key = self.keys.wake(message.queue_name)
        pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
        pipe.lpush(key, b"1")
        pipe.ltrim(key, 0, _WAKE_BACKLOG - 1)
        pipe.execute()
