"""The one settings object. Created only at entry points and passed down as plain values."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration read from the environment (and an optional `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/switchyard"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix for every Redis key this deployment owns (events, flags, Dramatiq queues), so
    # several deployments or test runs can share one Redis.
    switchyard_namespace: str = "switchyard"
    switchyard_admin_key: SecretStr | None = None

    log_level: str = "INFO"
    log_json: bool = True
    redis_max_connections: int = 200

    max_json_body_bytes: int = 10 * 1024 * 1024
    sse_keepalive_s: float = 15.0
    max_sse_lifetime_s: float = 3600.0
    chat_timeout_s: float = 600.0

    # Jobs
    job_max_attempts: int = 3
    sweeper_interval_s: float = 30.0
    sweeper_stale_after_s: float = 120.0
    event_stream_maxlen: int = 10_000
    event_stream_ttl_s: int = 6 * 3600

    # Workers
    stream_flush_ms: float = 10.0
    worker_heartbeat_interval_s: float = 5.0
    worker_presence_ttl_s: float = 20.0
    broker_heartbeat_timeout_ms: int = 60_000
    broker_maintenance_chance: int = 1000
    db_pool_size: int = Field(default=10, ge=1)
