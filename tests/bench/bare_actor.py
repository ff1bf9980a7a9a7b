"""The baseline for job throughput: a bare Dramatiq actor on the same Redis, doing nothing.

Run as `dramatiq tests.bench.bare_actor` with REDIS_URL and BARE_NAMESPACE set.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["BARE_NAMESPACE"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bare_noop", queue_name="default", max_retries=0)
def bare_noop(job_id: str) -> None:
    """Does nothing: whatever this costs is Dramatiq's own overhead."""
