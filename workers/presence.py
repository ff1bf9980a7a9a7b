"""Announces each live worker process in Redis, for `/ready` and the operator dashboard.

Dramatiq's own heartbeats cannot serve: every broker that enqueues (the API too) writes one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import dramatiq
import orjson

from schemas.settings import Settings
from workers.resources import current

log = logging.getLogger("switchyard.presence")


class Presence(dramatiq.Middleware):
    def __init__(self, settings: Settings) -> None:
        self.interval_s = settings.worker_heartbeat_interval_s
        self.ttl_s = settings.worker_presence_ttl_s
        self._stop = threading.Event()
        self.worker_id = ""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "queues": sorted(worker.consumer_whitelist or broker.get_declared_queues()),
                "started_at": time.time(),
                "threads": worker.worker_threads}
        self._beat(info)
        threading.Thread(target=self._loop, args=(info,), name="presence", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        try:
            res = current()
            res.redis.zrem(res.keys.workers(), self.worker_id)
            res.redis.delete(res.keys.worker_info(self.worker_id))
        except Exception:
            log.warning("could not withdraw worker presence", exc_info=True)

    def _loop(self, info: dict[str, object]) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat(info)
            except Exception:
                log.warning("worker heartbeat failed", exc_info=True)

    def _beat(self, info: dict[str, object]) -> None:
        res = current()
        now_ms = int(time.time() * 1000)
        # What the dashboard shows per process, fresh on every beat.
        info["rss_mib"] = _rss_mib()
        info["active_jobs"] = res.active_jobs
        pipe = res.redis.pipeline(transaction=False)
        pipe.zadd(res.keys.workers(), {self.worker_id: now_ms})
        pipe.zremrangebyscore(res.keys.workers(), 0, now_ms - int(self.ttl_s * 3000))
        pipe.set(res.keys.worker_info(self.worker_id), orjson.dumps(info),
                 ex=int(self.ttl_s * 3))
        pipe.execute()


def _rss_mib() -> float | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 1)
