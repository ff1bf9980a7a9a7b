"""Queue depth, delayed and dead-letter gauges, refreshed from Redis on an interval (and
this process's request totals folded into Redis on the same beat, api/request_totals.py).

A scrape only reads the gauges: Prometheus scraping every few seconds from several
replicas must not turn into as many Redis scans. One pipelined round trip per interval
reads every queue's lengths (Dramatiq's Redis layout: the queue list `<ns>:<q>`, its delay
queue `<ns>:<q>.DQ`, and its dead-letter sorted set `<ns>:<q>.XQ`) and the live-worker count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.request_totals import REQUEST_TOTALS
from pipelines import metrics
from pipelines.db import deployment_stats
from pipelines.keys import Keys
from schemas.deployments import DeploymentState
from schemas.jobs import JOB_ROUTES, QUEUE_GROUPS

log = logging.getLogger("switchyard.queue_gauges")

# Here, not in pipelines/metrics.py: an unlabelled gauge exists (as 0) in every process that
# imports it, and under the workers' multiprocess mode their zeros would be merged in.
WORKERS_ALIVE = Gauge("switchyard_workers_alive", "Worker processes whose heartbeat is fresh.",
                      multiprocess_mode="mostrecent")
QUEUES = tuple(sorted({*QUEUE_GROUPS, *(route.queue_name for route in JOB_ROUTES.values())}))


# (queues) -> (ready, delayed, dead-lettered) per queue, from a broker that is not Redis
# (RabbitMQ: api/enqueue_amqp.py `AmqpEnqueuer.queue_counts`).
BrokerCounts = Callable[[list[str]], Awaitable[list[tuple[int, int, int]]]]


async def refresh_queue_gauges(redis: Redis, keys: Keys, worker_ttl_s: float,
                               broker_counts: BrokerCounts | None = None) -> None:
    """Read every queue's lengths and the live workers once, into the gauges. With
    `broker_counts` the lengths come from that broker; the live workers from Redis always."""
    pipe = redis.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(keys.dramatiq_queue(queue))
        pipe.llen(keys.dramatiq_queue(f"{queue}.DQ"))
        pipe.zcard(keys.dramatiq_queue(f"{queue}.XQ"))
    pipe.zcount(keys.workers(), int((time.time() - worker_ttl_s) * 1000), "+inf")
    counts = await pipe.execute()
    for i, queue in enumerate(QUEUES):
        metrics.QUEUE_DEPTH.labels(queue).set(counts[3 * i])
        metrics.QUEUE_DELAYED.labels(queue).set(counts[3 * i + 1])
        metrics.QUEUE_DEAD_LETTERS.labels(queue).set(counts[3 * i + 2])
    WORKERS_ALIVE.set(counts[-1])
    if broker_counts is not None:
        for queue, (ready, delayed, dead) in zip(
                QUEUES, await broker_counts(list(QUEUES)), strict=True):
            metrics.QUEUE_DEPTH.labels(queue).set(ready)
            metrics.QUEUE_DELAYED.labels(queue).set(delayed)
            metrics.QUEUE_DEAD_LETTERS.labels(queue).set(dead)


async def refresh_deployment_gauges(engine: AsyncEngine) -> None:
    """Deployments per state, every state listed (zeros included) so a state emptied shows 0."""
    async with engine.connect() as conn:
        rows = {row.state: row for row in (await conn.execute(deployment_stats.by_state()))}
    for state in {*(s.value for s in DeploymentState), *rows}:
        row = rows.get(state)
        metrics.DEPLOYMENTS.labels(state).set(row.deployments if row else 0)
        metrics.DEPLOYMENT_HOURLY_COST.labels(state).set(float(row.hourly_cost) if row else 0.0)


class QueueGauges:
    """The refresh loop, owned by the app's lifespan (`start`, `stop`)."""

    def __init__(self, redis: Redis, keys: Keys, *, interval_s: float,
                 worker_ttl_s: float, broker_counts: BrokerCounts | None = None,
                 engine: AsyncEngine | None = None) -> None:
        self._broker_counts = broker_counts
        self._engine = engine
        self._redis = redis
        self._keys = keys
        self._interval_s = interval_s
        self._worker_ttl_s = worker_ttl_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="queue-gauges")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await refresh_queue_gauges(self._redis, self._keys, self._worker_ttl_s,
                                           self._broker_counts)
                await REQUEST_TOTALS.flush(self._redis, self._keys)
                if self._engine is not None:
                    await refresh_deployment_gauges(self._engine)
            except Exception as exc:  # Redis down: keep the last values, try again later.
                log.warning("queue gauges not refreshed: %r", exc)
            await asyncio.sleep(self._interval_s)
