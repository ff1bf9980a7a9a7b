"""Sending jobs through RabbitMQ (BROKER_URL=amqp://...), by actor name like api/enqueue.py.

Events, cancel flags and rate limits stay on Redis, so a send is two steps: the `queued`
event on Redis, then the message on RabbitMQ through Dramatiq's own `RabbitmqBroker`
(which declares the queue and retries a publish over a broken connection). pika's
`BlockingConnection` is synchronous and not thread-safe, and Dramatiq keeps one connection
per thread, so publishes run on a small executor of our own: a bounded number of
connections per API process, never on the event loop. The one-round-trip Lua enqueue and
the wake-up push of api/enqueue.py are Redis-only optimisations and do not apply.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis

from api.enqueue import Enqueuer
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys
from schemas.jobs import JOB_ROUTES, JobRoute
from schemas.settings import Settings

_PUBLISH_THREADS = 4


class AmqpEnqueuer:
    def __init__(self, broker: RabbitmqBroker, events: AsyncEventLog) -> None:
        self._broker = broker
        self._events = events
        self._executor = ThreadPoolExecutor(_PUBLISH_THREADS, thread_name_prefix="amqp-send")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def send(self, kind: str, job_id: str,
                   announce: dict[str, Any] | None = None) -> None:
        """Enqueue a job of `kind`; with `announce`, publish `queued` first."""
        await self.send_to(JOB_ROUTES[kind], job_id, announce)

    async def send_to(self, route: JobRoute, job_id: str,
                      announce: dict[str, Any] | None = None) -> None:
        if announce is not None:
            await self._events.publish(job_id, "queued", announce)
        message: Message[Any] = Message(queue_name=route.queue_name,
                                        actor_name=route.actor_name, args=(job_id,),
                                        kwargs={}, options={})
        await self._run(self._broker.enqueue, message)

    def _counts(self, queues: list[str]) -> list[tuple[int, int, int]]:
        counts = []
        for queue in queues:
            try:
                counts.append(self._broker.get_queue_message_counts(queue))
            except Exception:
                # A queue nobody declared yet does not exist (the passive declare closes
                # the channel): nothing is in it.
                self._reset()
                counts.append((0, 0, 0))
        return counts

    async def queue_counts(self, queues: list[str]) -> list[tuple[int, int, int]]:
        """(ready, delayed, dead-lettered) messages per queue, as RabbitMQ counts them."""
        return list(await self._run(self._counts, queues))

    def _reset(self) -> None:
        # Dramatiq keeps the connection and channel per thread; dropping them makes the
        # next use on this thread reconnect.
        with contextlib.suppress(Exception):
            del self._broker.channel
        with contextlib.suppress(Exception):
            del self._broker.connection

    def _ping(self) -> bool:
        try:
            self._broker.connection.process_data_events(time_limit=0)
            return True
        except Exception:
            self._reset()
            return False

    async def ping(self) -> bool:
        """Whether RabbitMQ answers (for /ready)."""
        return bool(await self._run(self._ping))

    def close(self) -> None:
        self._broker.close()
        self._executor.shutdown(wait=False)


def build_enqueuer(settings: Settings, redis: Redis, keys: Keys,
                   events: AsyncEventLog) -> tuple[Broker, Enqueuer | AmqpEnqueuer]:
    """The API's send-only broker (no worker middleware, so it never consumes) and the
    enqueuer over it: RabbitMQ when BROKER_URL is amqp://..., else Redis."""
    if settings.uses_rabbitmq:
        rabbit = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True, middleware=[])
        return rabbit, AmqpEnqueuer(rabbit, events)
    broker = RedisBroker(url=settings.redis_url, namespace=keys.dramatiq_namespace,
                         middleware=[])
    return broker, Enqueuer(broker, redis, keys, events)
