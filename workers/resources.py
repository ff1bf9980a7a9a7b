"""Per-process clients, built once the worker process has booted.

Module-level state only because Dramatiq actors are plain functions: everything an actor
needs is reached through `current()`, which fails loudly if used before boot.

Async actors use the async clients (asyncpg pool, async Redis, async provider clients),
which are created here but only ever used on the process's one event loop
(workers/loop.py). The sync engine and Redis client serve the threads that are not on the
loop: the sweeper, the presence heartbeat, webhook delivery, and ingestion's CPU-bound
pipeline, which runs in a thread so the loop stays free.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.embedders.registry import Embedders, default_spec
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys
from pipelines.models import AsyncModelRegistry, dev_models
from pipelines.providers.pool import ChatModels
from pipelines.redis_client import async_redis
from pipelines.storage import FileStore, file_store_of
from schemas.settings import Settings
from workers.loop import EventLoop


@dataclass(slots=True)
class Resources:
    settings: Settings
    engine: Engine
    # The same pool without transactions, for reads and single-statement writes: one round
    # trip per statement instead of three.
    autocommit: Engine
    redis: Redis
    keys: Keys
    # The loop's clients (see the module docstring).
    aengine: AsyncEngine
    aautocommit: AsyncEngine
    aredis: AsyncRedis
    aevents: AsyncEventLog
    models: AsyncModelRegistry
    chat_models: ChatModels
    # Knowledge ingestion: embedders are built (and a local model loaded) on first use.
    embedders: Embedders
    file_store: FileStore
    # Jobs this process is running now (on its event loop), for load-aware choices such as
    # the streams' coalescing window.
    active_jobs: int = 0


_current: Resources | None = None


def current() -> Resources:
    if _current is None:
        raise RuntimeError("worker resources used before the worker process booted")
    return _current


class WorkerResources(dramatiq.Middleware):
    """Builds the engine and Redis client after fork, so no connection crosses a fork."""

    def __init__(self, settings: Settings, loop: EventLoop) -> None:
        self.settings = settings
        self.loop = loop

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from pipelines.db.engine import async_engine, sync_engine
        from pipelines.secretbox import secret_box

        global _current
        settings = self.settings
        keys = Keys(settings.switchyard_namespace)
        redis = Redis.from_url(settings.redis_url, socket_timeout=30, health_check_interval=30)
        engine = sync_engine(settings.database_url, pool_size=settings.db_pool_size)
        aengine = async_engine(settings.database_url, pool_size=settings.db_pool_size)
        aredis = async_redis(settings.redis_url, max_connections=settings.redis_max_connections)
        secret = settings.switchyard_secret_key
        chat_models = ChatModels(default_timeout_s=settings.upstream_timeout_s,
                                 max_retries=settings.upstream_max_retries,
                                 backoff_base_s=settings.upstream_backoff_base_s)
        self.loop.on_shutdown(chat_models.aclose)
        self.loop.on_shutdown(aredis.aclose)
        self.loop.on_shutdown(aengine.dispose)
        _current = Resources(
            settings=settings,
            engine=engine,
            autocommit=engine.execution_options(isolation_level="AUTOCOMMIT"),
            redis=redis,
            keys=keys,
            aengine=aengine,
            aautocommit=aengine.execution_options(isolation_level="AUTOCOMMIT"),
            aredis=aredis,
            aevents=AsyncEventLog(aredis, keys, maxlen=settings.event_stream_maxlen,
                                  ttl_s=settings.event_stream_ttl_s,
                                  max_event_bytes=settings.max_event_bytes,
                                  max_stream_bytes=settings.event_stream_max_bytes),
            models=AsyncModelRegistry(aengine,
                                      secret_box(secret.get_secret_value() if secret else None),
                                      ttl_s=settings.model_cache_ttl_s,
                                      dev=dev_models(enabled=settings.dev_models_enabled,
                                                     max_output_tokens=settings.dev_max_tokens)),
            chat_models=chat_models,
            embedders=build_embedders(settings),
            file_store=file_store_of(settings, engine),
        )

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        if _current is not None:
            _current.engine.dispose()
            _current.redis.close()


def build_embedders(settings: Settings) -> Embedders:
    key = settings.embedding_api_key or settings.openai_api_key
    return Embedders(
        default_spec(settings.embedding_provider, settings.embedding_model,
                     settings.embedding_dimension),
        openai_api_key=key.get_secret_value() if key else None,
        openai_base_url=settings.embedding_base_url or settings.openai_base_url,
        timeout_s=settings.upstream_timeout_s, max_retries=settings.upstream_max_retries)
