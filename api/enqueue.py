"""Sending jobs to workers by actor name, so the API never imports worker code.

Dramatiq's `RedisBroker.enqueue` is synchronous, so calling it from the event loop means a
thread hop and two round trips (the message, then the wake-up of an idle consumer). Instead
the API runs Dramatiq's own `dispatch.lua` with the argument layout of
`RedisBroker._dispatch`, pipelined with the job's `queued` event and the wake-up push: one
round trip, no thread. `tests/unit/test_enqueue_layout.py` checks the layout against the
installed Dramatiq, so an upgrade that changes it fails the build rather than production.
"""

from __future__ import annotations

import time
import uuid
from importlib import resources
from typing import Any

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from pipelines import metrics
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys
from schemas.jobs import JOB_ROUTES, JobRoute

_WAKE_BACKLOG = 256
DISPATCH_LUA = (resources.files("dramatiq.brokers") / "redis" / "dispatch.lua").read_bytes()


def dispatch_args(broker: RedisBroker, message: Message, max_unpack_size: int) -> list[Any]:
    """ARGV of dispatch.lua's `enqueue` command, as `RedisBroker._dispatch` builds it.

    Maintenance is left to the workers (they dispatch far more often), hence the 0.
    """
    return ["enqueue", int(time.time() * 1000), message.queue_name, broker.broker_id,
            broker.heartbeat_timeout, broker.dead_message_ttl, 0, max_unpack_size,
            message.options["redis_message_id"], message.encode()]


class Enqueuer:
    def __init__(self, broker: RedisBroker, redis: Redis, keys: Keys,
                 events: AsyncEventLog) -> None:
        self._broker = broker
        self._redis = redis
        self._keys = keys
        self._events = events
        self._max_unpack_size = broker._max_unpack_size()
        self._sha: str | None = None

    async def send(self, kind: str, job_id: str,
                   announce: dict[str, Any] | None = None) -> None:
        """Enqueue a job of `kind`; with `announce`, publish `queued` in the same round trip."""
        await self.send_to(JOB_ROUTES[kind], job_id, announce)
        metrics.jobs_enqueued(kind).inc()

    async def send_to(self, route: JobRoute, job_id: str,
                      announce: dict[str, Any] | None = None) -> None:
        message: Message[Any] = Message(
            queue_name=route.queue_name, actor_name=route.actor_name, args=(job_id,), kwargs={},
            options={"redis_message_id": str(uuid.uuid4())})
        for attempt in range(2):
            if self._sha is None:
                self._sha = await self._redis.script_load(DISPATCH_LUA)
                await self._events.load_script()
            pipe = self._redis.pipeline(transaction=False)
            if announce is not None:
                self._events.publish_into(pipe, job_id, "queued", announce)
            self._add(pipe, message)
            try:
                await pipe.execute()
                return
            except NoScriptError:
                # Redis restarted or its scripts were flushed: load them again, once.
                self._sha = None
                if attempt:
                    raise

    def _add(self, pipe: Pipeline, message: Message) -> None:
        wake = self._keys.wake(message.queue_name)
        assert self._sha is not None, "send_to loads the script first"
        pipe.evalsha(self._sha, 1, self._broker.namespace,
                     *dispatch_args(self._broker, message, self._max_unpack_size))
        # Wake an idle consumer of that queue (see workers/consumer.py).
        pipe.lpush(wake, b"1")
        pipe.ltrim(wake, 0, _WAKE_BACKLOG - 1)
