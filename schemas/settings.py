"""The one settings object. Created only at entry points and passed down as plain values."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Public development secrets: accepted only when SWITCHYARD_ENV=development.
DEV_WEBHOOK_SECRET = "switchyard-dev-webhook-secret"
DEV_SECRET_KEY = "switchyard-development-secret-key-do-not-use-in-production"
MIN_SECRET_BYTES = 32


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
    # A request body must arrive within this long of the request's start (else 408 and the
    # connection closes); the request head has uvicorn's --timeout-keep-alive (api/http_guard.py).
    body_read_timeout_s: float = Field(default=60.0, gt=0)
    sse_keepalive_s: float = 15.0
    max_sse_lifetime_s: float = 3600.0
    chat_timeout_s: float = 600.0

    # Jobs
    job_max_attempts: int = 3
    sweeper_interval_s: float = 30.0
    sweeper_stale_after_s: float = 120.0
    event_stream_maxlen: int = 10_000
    event_stream_ttl_s: int = 6 * 3600
    # What one job may output (pipelines/events.py, pipelines/output_limits.py): each
    # event's encoded data, all of its events together, and its stored result. A terminal
    # event is always accepted, so every job can end; the result it carries is capped.
    max_event_bytes: int = Field(default=4 * 1024 * 1024, ge=4096)
    event_stream_max_bytes: int = Field(default=32 * 1024 * 1024, ge=4096)
    max_result_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)

    # `development` accepts the public development secrets (with a warning); `production`
    # refuses to start the API or workers without real ones (`require_real_secrets`).
    # `switchyard dev` sets development and keeps generated secrets under var/.
    environment: Literal["development", "production"] = Field(
        default="production", validation_alias="switchyard_env")

    # Signs webhook bodies (X-Switchyard-Signature); a real one is required in production.
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    webhook_timeout_s: float = 10.0
    # Webhook subscriptions (POST /v1/webhooks): attempts per delivery, and the backoff
    # before each retry (WEBHOOK_BACKOFF_S, doubling, at most WEBHOOK_MAX_BACKOFF_S).
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    webhook_max_backoff_s: float = Field(default=300.0, gt=0)
    # Outbound URLs that users and admins give (webhooks, model base URLs) must resolve to
    # public addresses (pipelines/outbound.py). OUTBOUND_ALLOW_PRIVATE lets private and
    # loopback ones through for every host, OUTBOUND_ALLOWED_HOSTS (comma-separated) for
    # the named hosts only. Link-local and cloud metadata addresses never pass.
    outbound_allow_private: bool = False
    outbound_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Workers
    # Worker processes `python -m workers.supervise` keeps running (queue groups: see
    # QUEUE_GROUPS in schemas/jobs.py). An I/O process runs up to WORKER_THREADS jobs at
    # once (async actors share its one event loop; each thread only waits on a coroutine);
    # CPU processes run ingestion with few threads, apart from the streams.
    worker_processes: int = Field(default=2, ge=0)
    worker_threads: int = Field(default=512, ge=1)
    worker_cpu_processes: int = Field(default=1, ge=0)
    worker_cpu_threads: int = Field(default=1, ge=1)
    # Tokens within this window of the last delta are coalesced into one event. Under load
    # the window widens with the streams a worker process holds (STREAM_FLUSH_MS per 50
    # streams), up to STREAM_FLUSH_MAX_MS: fewer, larger events instead of a queue.
    stream_flush_ms: float = Field(default=10.0, ge=0)
    stream_flush_max_ms: float = Field(default=100.0, ge=0)
    # Dramatiq's broker: unset, Redis at REDIS_URL (with the wake-up consumer and the
    # one-round-trip enqueue); amqp://user:pass@host:5672/vhost, RabbitMQ. Events, cancel
    # flags, rate limits and worker presence stay on Redis either way.
    broker_url: str | None = None
    worker_heartbeat_interval_s: float = 5.0
    worker_presence_ttl_s: float = 20.0
    broker_heartbeat_timeout_ms: int = 60_000
    broker_maintenance_chance: int = 1000
    db_pool_size: int = Field(default=20, ge=1)
    # Metrics (pipelines/metrics.py): the API refreshes its queue gauges from Redis this
    # often (0: never); the worker supervisor serves its processes' merged metrics on this
    # port (0: not at all), from a directory of its own unless WORKER_METRICS_DIR names one.
    queue_metrics_interval_s: float = Field(default=5.0, ge=0)
    worker_metrics_port: int = Field(default=9191, ge=0, le=65535)
    worker_metrics_host: str = "0.0.0.0"
    worker_metrics_dir: str | None = None

    # Chains (pipelines/chains.py): a run's inputs (JSON bytes, fields), prompts per chain,
    # and how long a run may take before it fails with TIMEOUT (a delayed message on the
    # `chains` queue enforces it; no worker waits for it).
    chain_max_input_bytes: int = Field(default=100 * 1024, ge=1)
    chain_max_input_fields: int = Field(default=50, ge=1)
    chain_max_prompts: int = Field(default=20, ge=1)
    chain_run_timeout_s: float = Field(default=15 * 60.0, gt=0)

    # Accounts and auth (see pipelines/accounts.py). Without a secret key a fixed
    # development key is used and a warning logged: set one in production, shared by all
    # API replicas, or sessions issued by one replica fail on another.
    switchyard_secret_key: SecretStr | None = None
    session_ttl_s: int = Field(default=12 * 3600, ge=60)
    open_registration: bool = False
    # Passkeys (api/routes/passkeys.py): the RP ID is the site's registrable domain, the
    # origins (comma-separated) those the browser pages run on; both are checked in every
    # ceremony. A challenge is single-use and expires after WEBAUTHN_CHALLENGE_TTL_S.
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "Switchyard"
    webauthn_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:8000"])
    webauthn_challenge_ttl_s: int = Field(default=300, ge=10, le=3600)
    # How long a verified key or session is trusted in-process; revocations still apply at
    # once: they are pushed to every API process over its pub/sub connection (api/auth.py).
    auth_cache_ttl_s: float = 30.0
    # Peers whose X-Forwarded-For names the client (IPs or CIDRs, comma-separated): the
    # fronting proxies. None by default, so the client is the TCP peer (api/app.py).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # CORS (api/cors.py): origins allowed to call the API from a browser, comma-separated
    # (none by default: no CORS headers at all). Credentialed requests only with listed
    # origins: `*` together with CORS_ALLOW_CREDENTIALS is refused at start-up.
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    cors_extra_headers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_max_age_s: int = Field(default=600, ge=0)

    # Rate limits (api/limits.py), shared by all replicas through Redis. A tier maps route
    # groups (auth, chat, search, upload, general) to `limits` strings; a group a tier
    # leaves out falls back to the `default` tier. Users carry a tier; the bootstrap admin
    # key uses `bootstrap_rate_limit_tier`.
    rate_limits_enabled: bool = True
    rate_limit_strategy: str = "sliding-window-counter"
    rate_limit_tiers: dict[str, dict[str, str]] = Field(default_factory=lambda: {
        "default": {"auth": "60/minute", "chat": "60/minute", "search": "120/minute",
                    "upload": "30/minute", "general": "600/minute"},
        "pro": {"auth": "120/minute", "chat": "600/minute", "search": "1200/minute",
                "upload": "300/minute", "general": "6000/minute"},
        "admin": {"auth": "100000/minute", "chat": "100000/minute",
                  "search": "100000/minute", "upload": "100000/minute",
                  "general": "100000/minute"},
    })
    bootstrap_rate_limit_tier: str = "admin"
    # Tier for requests without credentials (login, register), counted per client address.
    anonymous_rate_limit_tier: str = "default"
    # Login attempts per client address, and failed logins of one account from one
    # address: an address is slowed down, never the account, so nobody can lock a user out.
    login_limit_per_account: str = "10/minute"
    login_limit_per_address: str = "30/minute"
    # Invalid API keys or session tokens per client address, checked before the lookup.
    auth_failure_limit_per_address: str = "30/minute"
    # Tokens a key may spend per UTC day across chat jobs; 0 means no budget.
    daily_token_budget: int = Field(default=0, ge=0)
    # Per tier, tokens per UTC day (a tier left out uses DAILY_TOKEN_BUDGET); Stack 2.9's
    # tiers would be {"default": 100000, "pro": 10000000}.
    tier_daily_token_budgets: dict[str, int] = Field(default_factory=dict)
    # Jobs (streams included) one key may run at once, per tier (api/leases.py; 0: no
    # limit; a tier left out uses `default`'s), shared by all replicas through Redis.
    # Stack 2.9's tiers: default 5, pro 20. A lease not renewed for
    # CONCURRENCY_LEASE_TTL_S (its API replica died) frees its slot.
    concurrency_limits: dict[str, int] = Field(default_factory=lambda: {
        "default": 5, "pro": 20, "admin": 0})
    concurrency_lease_ttl_s: float = Field(default=30.0, ge=1)

    # Model registry (pipelines/models.py). Seeded at API start-up, idempotently, from
    # these keys and the optional models file (JSON or TOML list of models); admin edits
    # win over seeds. Upstream keys are stored encrypted with a key derived from
    # SWITCHYARD_SECRET_KEY. Each process caches the registry for `model_cache_ttl_s`.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    models_file: str | None = None
    model_cache_ttl_s: float = Field(default=3.0, ge=0)
    upstream_timeout_s: float = Field(default=60.0, gt=0)
    upstream_max_retries: int = Field(default=2, ge=0)
    upstream_backoff_base_s: float = Field(default=0.5, ge=0)
    # Development models (dev/echo, dev/lorem): off unless enabled (`switchyard dev` and the
    # test stacks turn them on); they answer at most DEV_MAX_TOKENS tokens.
    dev_models_enabled: bool = False
    dev_max_tokens: int = Field(default=4096, ge=1)

    # Knowledge bases (pipelines/ingest, pipelines/retrieve.py). EMBEDDING_PROVIDER is
    # local (MiniLM-L6-v2 on the CPU, needs the local-embeddings extra), openai (any
    # OpenAI-compatible /embeddings; EMBEDDING_BASE_URL / EMBEDDING_API_KEY, else the
    # OPENAI_* ones) or hash (a dev embedder with no meaning); unset: local when its
    # packages are installed, else hash. A base keeps the model it was created with.
    embedding_provider: Literal["local", "openai", "hash"] | None = None
    embedding_model: str | None = None
    embedding_dimension: int | None = Field(default=None, ge=8, le=4000)
    embedding_base_url: str | None = None
    embedding_api_key: SecretStr | None = None
    # Texts per embedder call (and per `progress` event) during ingestion.
    embedding_batch_size: int = Field(default=256, ge=1)
    chunk_max_characters: int = Field(default=1500, ge=100)
    chunk_overlap: int = Field(default=150, ge=0)
    # Where uploaded files live (pipelines/storage.py): `postgres` (the default: in the
    # database, with their document rows), `s3://bucket/prefix` (any S3-compatible service;
    # FILE_STORE_ENDPOINT_URL for one that is not AWS, credentials from these settings or
    # boto3's usual AWS_* variables), or `file:///dir` (development only: one host's disk).
    file_store_url: str = "postgres"
    file_store_endpoint_url: str | None = None
    file_store_region: str | None = None
    file_store_access_key_id: str | None = None
    file_store_secret_access_key: SecretStr | None = None
    # Direct uploads (POST /v1/uploads): how long an upload URL stays valid; an unconfirmed
    # upload is swept with its bytes after that. PUBLIC_BASE_URL is this API as clients
    # reach it (behind a load balancer), for Switchyard upload URLs; else the request's own.
    upload_url_ttl_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # An S3 upload that began just before its URL expired may still be finishing: the
    # sweeper leaves an expired upload this long before deleting it and its bytes.
    upload_sweep_grace_s: float = Field(default=300.0, ge=0)
    public_base_url: str | None = None
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # What one document may cost to ingest (pipelines/ingest/limits.py), each checked
    # before the step it guards; passing one fails the document with DOCUMENT_TOO_LARGE
    # (INGEST_TIMEOUT for the time limit). Files are read in a child process that may use
    # INGEST_MAX_MEMORY_BYTES of address space beyond the parser libraries it starts with.
    ingest_max_pages: int = Field(default=2000, ge=1)
    ingest_max_inflated_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    ingest_max_elements: int = Field(default=200_000, ge=1)
    ingest_max_columns: int = Field(default=10_000, ge=1)
    ingest_max_cells: int = Field(default=2_000_000, ge=1)
    ingest_max_chunks: int = Field(default=50_000, ge=1)
    ingest_timeout_s: float = Field(default=600.0, gt=0)
    ingest_max_memory_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=64 * 1024 * 1024)
    # Ask answers "nothing relevant" unless a retrieved chunk shares a keyword with the
    # question or has at least this cosine similarity to it.
    ask_min_similarity: float = Field(default=0.3, ge=-1, le=1)
    ask_max_context_chars: int = Field(default=24_000, ge=1000)
    # HNSW candidate list per query (pgvector's hnsw.ef_search); more is slower, higher recall.
    hnsw_ef_search: int = Field(default=100, ge=10, le=1000)

    # Deployments (pipelines/deploy/): each I/O worker process runs a supervisor that looks
    # at every deployment each DEPLOY_TICK_S, holds a Redis lease per deployment it runs
    # (renewed each tick, adopted by another worker DEPLOY_LEASE_TTL_S after its holder
    # died), health-checks each DEPLOY_HEALTH_INTERVAL_S (unhealthy after
    # DEPLOY_FAILURE_THRESHOLD failed checks in a row), waits DEPLOY_START_TIMEOUT_S for a
    # new server, restarts a crashed one after DEPLOY_RESTART_BACKOFF_S (doubling) up to
    # DEPLOY_MAX_RESTARTS times, then gives up (failed). A stop sends SIGTERM, then
    # SIGKILL after DEPLOY_STOP_GRACE_S. Servers are advertised to chat workers at
    # DEPLOY_ADVERTISE_HOST. Hourly costs accrue per DEPLOY_COST_HOUR_S (shortened in tests).
    deploy_tick_s: float = Field(default=1.0, gt=0)
    deploy_lease_ttl_s: float = Field(default=10.0, gt=0)
    deploy_health_interval_s: float = Field(default=5.0, gt=0)
    deploy_health_timeout_s: float = Field(default=2.0, gt=0)
    deploy_health_initial_delay_s: float = Field(default=0.0, ge=0)
    deploy_failure_threshold: int = Field(default=3, ge=1)
    deploy_start_timeout_s: float = Field(default=60.0, gt=0)
    deploy_max_restarts: int = Field(default=5, ge=0)
    deploy_restart_backoff_s: float = Field(default=1.0, ge=0)
    deploy_stop_grace_s: float = Field(default=10.0, ge=0)
    deploy_log_lines: int = Field(default=1000, ge=10)
    deploy_advertise_host: str = "127.0.0.1"
    deploy_cost_hour_s: float = Field(default=3600.0, gt=0)
    # STING's model management: models loaded at once (POST /v1/models/{id}/load refuses
    # past it with 409), and the model GET /v1/models names as the default.
    max_loaded_models: int = Field(default=4, ge=1)
    default_model: str | None = None

    @field_validator("outbound_allowed_hosts", "trusted_proxies", "cors_allowed_origins",
                     "cors_extra_headers", "webauthn_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_allowed_origins:
            raise ValueError("CORS_ALLOW_CREDENTIALS needs explicit CORS_ALLOWED_ORIGINS, "
                             "not '*': any site could act as the signed-in user")
        return self

    @property
    def uses_rabbitmq(self) -> bool:
        """BROKER_URL names RabbitMQ (amqp:// or amqps://)."""
        return (self.broker_url or "").lower().startswith(("amqp://", "amqps://"))

    def require_real_secrets(self) -> None:
        """Refuse to run outside development with a missing, short or public secret.

        Called at the API's and the workers' start: a default secret lets anyone forge
        sessions (SWITCHYARD_SECRET_KEY) or webhook signatures (WEBHOOK_SECRET).
        """
        if self.environment == "development":
            return
        key = self.switchyard_secret_key.get_secret_value() if self.switchyard_secret_key else ""
        weak = [name for name, value, public in (
            ("SWITCHYARD_SECRET_KEY", key, DEV_SECRET_KEY),
            ("WEBHOOK_SECRET", self.webhook_secret.get_secret_value(), DEV_WEBHOOK_SECRET),
        ) if value == public or len(value.encode()) < MIN_SECRET_BYTES]
        if weak:
            raise ValueError(
                f"{' and '.join(weak)} must be set to random secrets of at least "
                f"{MIN_SECRET_BYTES} bytes (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`); SWITCHYARD_ENV=development accepts "
                "the public development defaults instead.")
