"""Dramatiq's Redis broker, with idle consumers woken by producers instead of polling.

Upstream's consumer sleeps with an exponential backoff up to the worker timeout when its
queue is empty, so a job sent to an idle worker waits up to that long before it is seen.
Here an idle consumer blocks on a per-queue wake-up list (BLPOP) that every enqueue pushes
to, so the hop from enqueue to a worker is one Redis round trip, and an idle worker costs
one blocking call per timeout instead of a poll every few milliseconds.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed

from pipelines.keys import Keys

_WAKE_BACKLOG = 256


class WakeableRedisBroker(RedisBroker):
    def __init__(self, *, keys: Keys, **kwargs: Any) -> None:
        super().__init__(namespace=keys.dramatiq_namespace, **kwargs)
        self.keys = keys
        self.add_middleware(_WakeOnEnqueue(keys))

    def consume(self, queue_name: str, prefetch: int = 1,
                timeout: int = 5000) -> dramatiq.Consumer:
        return _WakeableConsumer(self, queue_name, prefetch, timeout,
                                 self.keys.wake(queue_name))


class _WakeableConsumer(_RedisConsumer):
    def __init__(self, broker: WakeableRedisBroker, queue_name: str, prefetch: int,
                 timeout: int, wake_key: str) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wake_key = wake_key

    def __next__(self) -> Any:
        if not self.message_cache and self.outstanding_message_count < self.prefetch:
            try:
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
