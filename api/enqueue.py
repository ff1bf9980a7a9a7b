"""Sending jobs to workers by actor name, so the API never imports worker code."""

from __future__ import annotations

import anyio
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from pipelines.keys import Keys
from schemas.jobs import JOB_ROUTES, JobRoute

_WAKE_BACKLOG = 256


class Enqueuer:
    def __init__(self, broker: RedisBroker, keys: Keys) -> None:
        self._broker = broker
        self._keys = keys

    async def send(self, kind: str, job_id: str) -> None:
        await self.send_to(JOB_ROUTES[kind], job_id)

    async def send_to(self, route: JobRoute, job_id: str) -> None:
        message: Message = Message(queue_name=route.queue_name, actor_name=route.actor_name,
                                   args=(job_id,), kwargs={}, options={})
        # Dramatiq's broker is synchronous; a thread keeps a slow Redis off the event loop.
        await anyio.to_thread.run_sync(self._enqueue, message)

    def _enqueue(self, message: Message) -> None:
        self._broker.enqueue(message)
        # Wake an idle consumer of that queue (see workers/consumer.py) instead of letting
        # it find the message on its next poll.
        wake = self._keys.wake(message.queue_name)
        pipe = self._broker.client.pipeline(transaction=False)
        pipe.lpush(wake, b"1")
        pipe.ltrim(wake, 0, _WAKE_BACKLOG - 1)
        pipe.execute()
