"""The Dramatiq broker for worker processes: Redis, our middleware, one global (Dramatiq's)."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from pipelines.keys import Keys
from pipelines.logs import configure_logging
from schemas.settings import Settings
from workers.consumer import WakeableRedisBroker
from workers.deploy_supervision import DeploymentSupervision
from workers.loop import EventLoop
from workers.presence import Presence
from workers.resources import WorkerResources
from workers.sweeper import Sweeper


def build_broker(settings: Settings) -> WakeableRedisBroker:
    loop = EventLoop()
    broker = WakeableRedisBroker(
        keys=Keys(settings.switchyard_namespace),
        url=settings.redis_url,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            Retries(min_backoff=500, max_backoff=30_000),
            CurrentMessage(),
            loop,
        ],
    )
    broker.add_middleware(WorkerResources(settings, loop))
    broker.add_middleware(Sweeper(settings))
    broker.add_middleware(Presence(settings))
    broker.add_middleware(DeploymentSupervision(settings))
    return broker


settings = Settings()
configure_logging(settings.log_level, json_logs=settings.log_json)
# Workers sign webhooks and unseal upstream keys: no public development secrets outside
# development (raises with the variables to set).
settings.require_real_secrets()
broker = build_broker(settings)
dramatiq.set_broker(broker)
