"""The Starlette app factory. The lifespan owns every process-wide client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.auth import build_authenticator, verify_credential
from api.context import Services
from api.cors import cors_middleware
from api.dashboard import routes as dashboard
from api.enqueue_amqp import AmqpEnqueuer, build_enqueuer
from api.errors import EXCEPTION_HANDLERS, ErrorBoundaryMiddleware
from api.http_metrics import HttpMetricsMiddleware
from api.hub import Hub
from api.knowledge_access import build_embedders
from api.limits import RateLimitMiddleware, build_limiter, refusal_headers
from api.middleware import AuthMiddleware, BodyDeadlineMiddleware, RequestIdMiddleware
from api.openapi import openapi_route
from api.queue_gauges import QueueGauges
from api.registry import start_model_registry
from api.routes import (
    admin_audit,
    admin_job_ops,
    admin_jobs,
    admin_models,
    admin_queues,
    admin_system,
    admin_users,
    agent_turns,
    chat,
    dashboard_live,
    jobs,
    messages,
    models,
    system,
    usage,
    ws_chat,
)
from api.routes import agents as agent_routes
from api.routes import ask as ask_routes
from api.routes import auth as auth_routes
from api.routes import chains as chain_routes
from api.routes import compare as compare_routes
from api.routes import conversations as conversation_routes
from api.routes import deployments as deployment_routes
from api.routes import documents as document_routes
from api.routes import embeddings as embedding_routes
from api.routes import keys as key_routes
from api.routes import knowledge as knowledge_routes
from api.routes import marketplace as marketplace_routes
from api.routes import passkeys as passkey_routes
from api.routes import uploads as upload_routes
from api.routes import webhooks as webhook_routes
from api.scopes import guard_routes
from api.url_guard import UrlGuardMiddleware
from pipelines.db.engine import async_engine
from pipelines.events import AsyncEventLog, parse_message
from pipelines.keys import Keys
from pipelines.logs import configure_logging
from pipelines.redis_client import async_redis
from pipelines.storage import file_store_of
from schemas.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    settings.require_real_secrets()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        keys = Keys(settings.switchyard_namespace)
        engine = async_engine(settings.database_url, pool_size=settings.db_pool_size)
        redis = async_redis(settings.redis_url, max_connections=settings.redis_max_connections)
        hub = Hub(redis, f"{keys.namespace}:hub", parse_message)
        auth = build_authenticator(settings, engine, redis, keys)
        hub.watch(auth.revocation_channel, auth.forget)
        await hub.start()
        events = AsyncEventLog(redis, keys, maxlen=settings.event_stream_maxlen,
                               ttl_s=settings.event_stream_ttl_s,
                               max_event_bytes=settings.max_event_bytes,
                               max_stream_bytes=settings.event_stream_max_bytes)
        broker, enqueuer = build_enqueuer(settings, redis, keys, events)
        app.state.services = Services(
            settings=settings, engine=engine, redis=redis,
            autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
            events=events, hub=hub, broker=broker,
            enqueuer=enqueuer, keys=keys,
            models=await start_model_registry(settings, engine),
            auth=auth,
            limiter=build_limiter(settings, redis, keys),
            embedders=build_embedders(settings),
            file_store=file_store_of(settings),
        )
        gauges = QueueGauges(redis, keys, interval_s=settings.queue_metrics_interval_s,
                             worker_ttl_s=settings.worker_presence_ttl_s,
                             broker_counts=enqueuer.queue_counts
                             if isinstance(enqueuer, AmqpEnqueuer) else None,
                             engine=engine.execution_options(isolation_level="AUTOCOMMIT"))
        gauges.start()
        leases = app.state.services.limiter.leases if app.state.services.limiter else None
        if leases is not None:
            leases.start()  # renews this process's concurrency leases (api/leases.py)
        try:
            yield
        finally:
            if leases is not None:
                await leases.stop()
            await gauges.stop()
            await hub.stop()
            broker.close()
            await redis.aclose()
            await engine.dispose()

    routes = [*system.routes, *jobs.routes, *chat.routes, *deployment_routes.routes,
              *models.routes,
              *admin_models.routes, *messages.routes, *ws_chat.routes, *usage.routes,
              *auth_routes.routes, *key_routes.routes, *admin_users.routes,
              *marketplace_routes.routes,
              *passkey_routes.routes, *webhook_routes.routes,
              *admin_system.routes, *conversation_routes.routes, *compare_routes.routes,
              *knowledge_routes.routes, *document_routes.routes, *upload_routes.routes,
              *embedding_routes.routes,
              *ask_routes.routes, *admin_jobs.routes, *chain_routes.routes,
              *admin_job_ops.routes, *admin_queues.routes, *admin_audit.routes,
              *agent_turns.routes, *agent_routes.routes, *dashboard_live.routes]
    # Key scopes (api/scopes.py): every /v1 route checks the one table before it runs.
    guard_routes(routes)
    app = Starlette(
        # The dashboard page is not an API: it stays out of /openapi.json.
        routes=[*routes, openapi_route(routes), *dashboard.routes],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            # Outermost: counts every answer, the refusals of the layers below included.
            Middleware(HttpMetricsMiddleware),
            # uvicorn runs with --no-proxy-headers: only the configured proxies are believed.
            Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies),
            Middleware(BodyDeadlineMiddleware, timeout_s=settings.body_read_timeout_s),
            Middleware(RequestIdMiddleware),
            # Answers preflights (no credentials) before authentication; outside the error
            # boundary so a 500 or 503 is readable by the browser too.
            *cors_middleware(settings),
            # Inside the request id, so its answers carry one; outside auth and rate limits,
            # which reach Redis and Postgres and so can fail with them.
            Middleware(ErrorBoundaryMiddleware),
            Middleware(UrlGuardMiddleware),
            Middleware(AuthMiddleware, verify=verify_credential,
                       public_paths=auth_routes.PUBLIC_PATHS,
                       optional_paths=auth_routes.OPTIONAL_AUTH_PATHS
                       | dashboard_live.OPTIONAL_AUTH_PATHS,
                       refusal_headers=refusal_headers),
            Middleware(RateLimitMiddleware),
        ],
    )
    return app
