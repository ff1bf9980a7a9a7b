"""What the admin routes and the dashboard's live feed both read: queue counts, live
workers and job statistics — one reader each, so the feed and `GET /v1/admin/queues`,
`/v1/system/status` and `/v1/admin/jobs/stats` can never disagree."""

from __future__ import annotations

import time

import orjson

from api.context import Services
from api.enqueue_amqp import AmqpEnqueuer
from pipelines.db import jobs as jobs_db
from schemas.accounts import WorkerStatus
from schemas.admin_jobs import JobCount, JobStats, RunTimes
from schemas.admin_queues import QueueRead
from schemas.jobs import JobStatus

# Job statistics look back this far ("last hour" counts and run-time percentiles).
STATS_WINDOW_S = 3600


async def read_queues(svc: Services, names: tuple[str, ...]) -> list[QueueRead]:
    """Each queue's queued, delayed, in-flight and dead-letter counts and pause, in one
    pipelined round trip (RabbitMQ's own counts replace Redis' where it is the broker)."""
    keys, redis = svc.keys, svc.redis
    pipe = redis.pipeline(transaction=False)
    for queue in names:
        pipe.llen(keys.dramatiq_queue(queue))
        pipe.llen(keys.dramatiq_queue(f"{queue}.DQ"))
        pipe.hlen(keys.dramatiq_messages(queue))
        pipe.zcard(keys.dramatiq_queue(f"{queue}.XQ"))
        pipe.sismember(keys.paused_queues(), queue)
    counts = await pipe.execute()
    out = []
    for i, queue in enumerate(names):
        queued, delayed, messages, dead, paused = counts[5 * i:5 * i + 5]
        out.append(QueueRead(name=queue, queued=queued, delayed=delayed,
                             in_flight=max(messages - queued, 0), dead_letters=dead,
                             paused=bool(paused)))
    if isinstance(svc.enqueuer, AmqpEnqueuer):  # RabbitMQ counts ready, delayed and dead
        for row, (ready, delayed, dead) in zip(
                out, await svc.enqueuer.queue_counts(list(names)), strict=True):
            row.queued, row.delayed, row.dead_letters = ready, delayed, dead
    return out


async def read_workers(svc: Services) -> list[WorkerStatus]:
    """Live workers (heartbeat within the presence TTL), with what each reports of itself."""
    keys, redis = svc.keys, svc.redis
    now_ms = time.time() * 1000
    cutoff_ms = now_ms - svc.settings.worker_presence_ttl_s * 1000
    raw: list[tuple[bytes, float]] = await redis.zrangebyscore(  # type: ignore[assignment]
        keys.workers(), cutoff_ms, "+inf", withscores=True)
    seen = [(worker.decode(), float(score)) for worker, score in raw]
    infos = await redis.mget([keys.worker_info(w) for w, _ in seen]) if seen else []
    return [WorkerStatus(id=w, last_seen_s_ago=round((now_ms - score) / 1000, 3),
                         info=orjson.loads(info) if info else None)
            for (w, score), info in zip(seen, infos, strict=True)]


async def read_stats(svc: Services) -> JobStats:
    """Counts per status and kind, and succeeded run-time percentiles over the window."""
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(jobs_db.stats(STATS_WINDOW_S))).all()
    by_status = {status.value: JobCount(total=0, last_hour=0) for status in JobStatus}
    by_kind: dict[str, JobCount] = {}
    overall, run_times = JobCount(total=0, last_hour=0), RunTimes(count=0)
    for row in rows:
        count = JobCount(total=row.total, last_hour=row.recent)
        if row.grouping == jobs_db.STATS_BY_STATUS:
            by_status[row.status] = count
        elif row.grouping == jobs_db.STATS_BY_KIND:
            by_kind[row.kind] = count
        else:
            # An empty table still yields this row (the empty grouping set), with zeros.
            overall = count
            run_times = RunTimes(count=row.succeeded_recent, p50_s=row.p50_s, p95_s=row.p95_s)
    return JobStats(window_s=STATS_WINDOW_S, overall=overall, by_status=by_status,
                    by_kind=dict(sorted(by_kind.items())), succeeded_run_time=run_times)
