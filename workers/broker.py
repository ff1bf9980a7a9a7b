"""The Dramatiq broker for worker processes, our middleware, one global (Dramatiq's).

Redis by default (with the wake-up consumer of workers/consumer.py); RabbitMQ when
BROKER_URL is amqp://... Events, cancel flags, presence, rate limits and the sweeper's lock
stay on Redis (REDIS_URL) either way. With RabbitMQ, a dead worker's unacked messages come
back when its connection closes, so there is nothing to `release`.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
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


def build_broker(settings: Settings) -> dramatiq.Broker:
    loop = EventLoop()
    middleware: list[dramatiq.Middleware] = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(min_backoff=500, max_backoff=30_000),
        CurrentMessage(),
        loop,
    ]
    broker: dramatiq.Broker
    if settings.uses_rabbitmq:
        # Publisher confirms: a message the API or a retry sends is on RabbitMQ's disk
        # before the send returns.
        broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True,
                                middleware=middleware)
    else:
        broker = WakeableRedisBroker(
            keys=Keys(settings.switchyard_namespace),
            url=settings.redis_url,
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
            middleware=middleware,
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
