"""Per-process clients, built once the worker process has booted.

Module-level state only because Dramatiq actors are plain functions: everything an actor
needs is reached through `current()`, which fails loudly if used before boot.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from redis import Redis
from sqlalchemy import Engine

from pipelines.events import EventLog
from pipelines.keys import Keys
from schemas.settings import Settings


@dataclass(slots=True)
class Resources:
    settings: Settings
    engine: Engine
    redis: Redis
    events: EventLog
    keys: Keys


_current: Resources | None = None


def current() -> Resources:
    if _current is None:
        raise RuntimeError("worker resources used before the worker process booted")
    return _current


class WorkerResources(dramatiq.Middleware):
    """Builds the engine and Redis client after fork, so no connection crosses a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from pipelines.db.engine import sync_engine

        global _current
        settings = self.settings
        keys = Keys(settings.switchyard_namespace)
        redis = Redis.from_url(settings.redis_url, socket_timeout=30, health_check_interval=30)
        _current = Resources(
            settings=settings,
            engine=sync_engine(settings.database_url, pool_size=settings.db_pool_size),
            redis=redis,
            events=EventLog(redis, keys, maxlen=settings.event_stream_maxlen,
                            ttl_s=settings.event_stream_ttl_s),
            keys=keys,
        )

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        if _current is not None:
            _current.engine.dispose()
            _current.redis.close()
