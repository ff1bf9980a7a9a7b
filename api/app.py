"""The Starlette app factory. The lifespan owns every process-wide client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware

from api.context import Services
from api.enqueue import Enqueuer
from api.errors import EXCEPTION_HANDLERS
from api.hub import Hub
from api.middleware import AuthMiddleware, RequestIdMiddleware, bootstrap_verifier
from api.openapi import openapi_route
from api.routes import chat, jobs, models, system
from pipelines.db.engine import async_engine
from pipelines.events import AsyncEventLog, parse_message
from pipelines.keys import Keys
from pipelines.logs import configure_logging
from schemas.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        keys = Keys(settings.switchyard_namespace)
        engine = async_engine(settings.database_url, pool_size=settings.db_pool_size)
        redis = Redis.from_url(settings.redis_url, max_connections=settings.redis_max_connections,
                               socket_timeout=30, health_check_interval=30)
        hub = Hub(redis, f"{keys.namespace}:hub", parse_message)
        await hub.start()
        # Used only to enqueue; no worker middleware, so it never consumes.
        broker = RedisBroker(url=settings.redis_url, namespace=keys.dramatiq_namespace,
                             middleware=[])
        app.state.services = Services(
            settings=settings, engine=engine, redis=redis,
            events=AsyncEventLog(redis, keys, maxlen=settings.event_stream_maxlen,
                                 ttl_s=settings.event_stream_ttl_s),
            hub=hub, broker=broker, enqueuer=Enqueuer(broker, keys), keys=keys,
        )
        try:
            yield
        finally:
            await hub.stop()
            broker.close()
            await redis.aclose()
            await engine.dispose()

    admin_key = settings.switchyard_admin_key
    routes = [*system.routes, *jobs.routes, *chat.routes, *models.routes]
    app = Starlette(
        routes=[*routes, openapi_route(routes)],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AuthMiddleware,
                       verify=bootstrap_verifier(admin_key.get_secret_value() if admin_key
                                                 else None)),
        ],
    )
    return app
