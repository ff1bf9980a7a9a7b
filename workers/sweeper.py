"""Re-sends jobs and webhook deliveries whose broker message was lost (e.g. Redis
restarted without persistence), and deletes direct uploads that expired unconfirmed, with
their bytes.

Runs as a thread in every worker process; a Redis lock lets one of them sweep per interval.
With Redis, a job is re-sent only if no message for it is in Dramatiq's hashes (queued,
delayed or in flight), so a long queue never causes a duplicate; with RabbitMQ, only once
its queue has drained (see `sweep_once`). Expired uploads are claimed with
`FOR UPDATE SKIP LOCKED`, so several sweepers never delete the same one twice; the rows and
Postgres-stored bytes go in one statement, an external store's objects right after.
"""

from __future__ import annotations

import json
import logging
import random
import threading

import dramatiq
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from pipelines.db import files as files_db
from pipelines.db import jobs as jobs_db
from schemas.jobs import JOB_ROUTES
from schemas.settings import Settings
from workers.resources import current

log = logging.getLogger("switchyard.sweeper")

_BATCH = 500


class Sweeper(dramatiq.Middleware):
    def __init__(self, settings: Settings) -> None:
        self.interval_s = settings.sweeper_interval_s
        self.stale_after_s = settings.sweeper_stale_after_s
        self.upload_grace_s = settings.upload_sweep_grace_s
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._loop, args=(broker,), name="sweeper", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _loop(self, broker: dramatiq.Broker) -> None:
        while not self._stop.wait(self.interval_s * random.uniform(0.5, 1.0)):
            try:
                recovered = sweep_once(broker, self.interval_s, self.stale_after_s)
                if recovered:
                    log.warning("sweeper re-sent %d lost jobs", recovered)
            except Exception:
                log.exception("sweeper pass failed")
            try:
                # Not at the top: workers/broker.py imports this module before it sets the
                # broker that the delivery actor's module declares its actor on.
                from workers.webhook_deliveries import resend_lost

                resent = resend_lost(broker, self.stale_after_s)
                if resent:
                    log.warning("sweeper re-sent %d lost webhook deliveries", resent)
            except Exception:
                log.exception("webhook delivery sweep failed")
            try:
                removed = sweep_uploads_once(self.upload_grace_s)
                if removed:
                    log.info("sweeper removed %d expired uploads", removed)
            except Exception:
                log.exception("upload sweep failed")


def sweep_once(broker: dramatiq.Broker, lock_s: float, stale_after_s: float) -> int:
    res = current()
    if not res.redis.set(res.keys.sweeper_lock(), b"1", nx=True, px=int(lock_s * 1000)):
        return 0
    with res.engine.begin() as conn:
        stale = conn.execute(jobs_db.claim_stale(stale_after_s, _BATCH)).all()
    if not stale:
        return 0
    queues = {JOB_ROUTES[row.kind].queue_name for row in stale if row.kind in JOB_ROUTES}
    in_broker: set[str] = set()
    busy_queues: set[str] = set()
    rabbitmq = False
    if isinstance(broker, RabbitmqBroker):
        rabbitmq = True
        # RabbitMQ cannot list a queue's messages. A running job's message is unacked in
        # its worker and comes back if that worker dies, so only `queued` jobs are re-sent,
        # and only once their queue has drained (nothing ready or delayed): a backlog is
        # never doubled. A message still prefetched by a busy worker may then run twice;
        # the second delivery is a retry (a `retry` event, a fresh attempt), and the job
        # still ends once.
        for queue in queues:
            try:
                ready, delayed, _ = broker.get_queue_message_counts(queue)
            except Exception:  # never declared: nothing in it
                del broker.connection
                continue
            if ready or delayed:
                busy_queues.add(queue)
    else:
        for queue in queues:
            for name in (queue, f"{queue}.DQ"):
                for raw in res.redis.hvals(res.keys.dramatiq_messages(name)):
                    args = json.loads(raw).get("args") or [None]
                    in_broker.add(str(args[0]))
    recovered = 0
    for row in stale:
        route = JOB_ROUTES.get(row.kind)
        if route is None or str(row.id) in in_broker or route.queue_name in busy_queues or (
                rabbitmq and row.status != "queued"):
            continue
        broker.enqueue(Message(queue_name=route.queue_name, actor_name=route.actor_name,
                               args=(str(row.id),), kwargs={}, options={}))
        recovered += 1
    return recovered


def sweep_uploads_once(grace_s: float) -> int:
    """Delete a batch of uploads expired for `grace_s`; returns how many."""
    res = current()
    with res.engine.begin() as conn:
        expired = conn.execute(files_db.delete_expired_uploads(grace_s, _BATCH)).all()
    staged = [row.file_key for row in expired if row.status != "confirmed"]
    if staged:
        res.file_store.discard(staged)
    return len(expired)
