"""SQLAlchemy Core tables: the schema Alembic migrates to and every query is built on."""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("priority", SmallInteger, nullable=False, server_default="0"),
    Column("input", JSONB, nullable=False),
    Column("result", JSONB),
    Column("error", JSONB),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("idempotency_key", Text),
    Column("parent_id", UUID(as_uuid=False)),
    Column("webhook_url", Text),
    # The API key that submitted the job, so usage is attributed per key (0003_models).
    Column("key_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("enqueued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_jobs_owner_created", "owner_id", text("created_at DESC"), text("id DESC")),
    # Operators page through every owner's jobs, newest first (GET /v1/admin/jobs).
    Index("ix_jobs_created", text("created_at DESC"), text("id DESC")),
    Index(
        "uq_jobs_owner_idempotency",
        "owner_id",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index(
        "ix_jobs_active_enqueued",
        "enqueued_at",
        postgresql_where=text("status IN ('queued', 'running')"),
    ),
)

# One row per delivery of a job a worker claimed (0014_job_attempts): which worker process
# ran it and how it ended. Written by the claim statement and finished by the terminal one
# (pipelines/db/jobs.py), inside those same statements. No foreign key to `jobs` (like
# `usage_records`): jobs are never deleted, and the claim stays one cheap statement.
job_attempts = Table(
    "job_attempts",
    metadata,
    Column("job_id", UUID(as_uuid=False), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    # `host:pid`, as the worker announces itself in its presence heartbeats.
    Column("worker_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    # succeeded, failed, cancelled, retried (the broker runs it again) or lost (a later
    # delivery began while this one was unfinished: its worker died); NULL while running.
    Column("outcome", Text),
    Column("error", JSONB),
)

# Accounts. Emails are stored lowercased, so the plain unique index is case-insensitive.
users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("email", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("password_hash", Text),
    Column("role", Text, nullable=False, server_default="user"),
    Column("tier", Text, nullable=False, server_default="default"),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Only the SHA-256 of a key is stored: keys are high-entropy, so a fast hash is enough.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("user_id", UUID(as_uuid=False), ForeignKey("users.id", ondelete="CASCADE"),
           nullable=False),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("scopes", ARRAY(Text), nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_api_keys_user_created", "user_id", "created_at"),
)

# One row per issued JWT (`jti`), so logout and deactivation can revoke a token early.
sessions = Table(
    "sessions",
    metadata,
    Column("jti", Text, primary_key=True),
    Column("user_id", UUID(as_uuid=False), ForeignKey("users.id", ondelete="CASCADE"),
           nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_sessions_user", "user_id"),
)

# The model registry (pipelines/models.py). `api_key` holds the upstream key sealed with
# pipelines/secretbox.py, never plain text. `source` is "seed" for rows written from
# settings at start-up (re-seeding may refresh them) and "admin" once an admin edits one.
models = Table(
    "models",
    metadata,
    Column("id", Text, primary_key=True),
    Column("provider", Text, nullable=False),
    Column("upstream_model", Text, nullable=False),
    Column("base_url", Text),
    Column("api_key", Text),
    Column("context_window", Integer, nullable=False, server_default="8192"),
    Column("capabilities", JSONB, nullable=False,
           server_default=text("'[\"chat\", \"streaming\"]'")),
    Column("input_price_per_mtok", Numeric(14, 6), nullable=False, server_default="0"),
    Column("output_price_per_mtok", Numeric(14, 6), nullable=False, server_default="0"),
    Column("fallbacks", JSONB, nullable=False, server_default=text("'[]'")),
    Column("timeout_s", Float),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("description", Text, nullable=False, server_default=""),
    Column("source", Text, nullable=False, server_default="admin"),
    # Most output tokens one request may ask for (NULL: no cap of our own); migration 0007.
    Column("max_output_tokens", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A deployment's model (source "deployment"): its deployment's model status
    # (schemas/deployments.py MODEL_STATUS); only "loaded" is routable. NULL for the
    # models of other sources. Migration 0009.
    Column("runtime_status", Text),
)

# Deployments (pipelines/deploy/): a model made servable by an endpoint or a supervised
# process. `state` changes only by conditional UPDATEs (pipelines/db/deployments.py);
# `desired` is what an admin asked for, which the supervisors converge on. `target`
# holds the endpoint key sealed (pipelines/secretbox.py). Migration 0009.
deployments = Table(
    "deployments",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("model", Text, nullable=False, unique=True),
    Column("upstream_model", Text, nullable=False),
    Column("target_type", Text, nullable=False),
    Column("target", JSONB, nullable=False),
    Column("context_window", Integer, nullable=False, server_default="8192"),
    Column("description", Text, nullable=False, server_default=""),
    Column("estimated_hourly_cost", Numeric(14, 6), nullable=False, server_default="0"),
    Column("desired", Text, nullable=False, server_default="running"),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("state", Text, nullable=False, server_default="pending"),
    Column("state_message", Text),
    Column("restart_count", Integer, nullable=False, server_default="0"),
    Column("first_failure_reason", Text),
    Column("first_failure_at", DateTime(timezone=True)),
    Column("host", Text),
    Column("pid", Integer),
    Column("port", Integer),
    Column("base_url", Text),
    Column("supervisor", Text),
    Column("last_health_at", DateTime(timezone=True)),
    Column("last_health_latency_ms", Float),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("cost_accrued_usd", Numeric(20, 10), nullable=False, server_default="0"),
    Column("billed_until", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per succeeded chat job (unique job_id: recorded exactly once), priced with the
# registry's prices of the model that answered.
usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", UUID(as_uuid=False), nullable=False, unique=True),
    Column("owner_id", Text, nullable=False),
    Column("key_id", Text),
    Column("model", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("duration_ms", Float),
    Column("ttft_ms", Float),
    Column("cost_usd", Numeric(20, 10), nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_usage_owner_created", "owner_id", "created_at"),
    Index("ix_usage_created", "created_at"),
)

# Conversations (pipelines/conversations.py). Messages order by their bigserial id: a prune
# summary takes the id of the oldest message it replaces, so it stays first.
conversations = Table(
    "conversations",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("title", Text),
    Column("model", Text, nullable=False),
    Column("system_prompt", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_pruning", JSONB),
    Index("ix_conversations_owner_created", "owner_id", "created_at"),
    Index("ix_conversations_owner_updated", "owner_id", "updated_at"),
)

conversation_messages = Table(
    "conversation_messages",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("conversation_id", UUID(as_uuid=False),
           ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("role", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("tokens", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("job_id", UUID(as_uuid=False)),
    Index("ix_conversation_messages_conversation", "conversation_id", "id"),
    # The assistant turn of a job is written by the worker; a redelivered job writes nothing.
    Index("uq_conversation_messages_reply", "job_id", unique=True,
          postgresql_where=text("role = 'assistant' AND job_id IS NOT NULL")),
)

# Knowledge bases (pipelines/db/knowledge.py). A base fixes its embedding model and
# dimension at creation; every chunk of it has vectors of that dimension.
knowledge_bases = Table(
    "knowledge_bases",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("tags", ARRAY(Text), nullable=False, server_default="{}"),
    Column("visibility", Text, nullable=False, server_default="private"),
    Column("embedding_provider", Text, nullable=False),
    Column("embedding_model", Text, nullable=False),
    Column("embedding_dimension", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_knowledge_bases_owner_created", "owner_id", "created_at"),
    Index("ix_knowledge_bases_tags", "tags", postgresql_using="gin"),
    Index("ix_knowledge_bases_public", "created_at",
          postgresql_where=text("visibility = 'public'")),
)

# The uploader's `metadata` only; processing facts have their own columns. One file per
# base per content hash: a second upload of the same bytes is a 409.
documents = Table(
    "documents",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("knowledge_id", UUID(as_uuid=False),
           ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("filename", Text, nullable=False),
    Column("content_type", Text),
    Column("file_type", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("storage_key", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="processing"),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("error", JSONB),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'")),
    Column("chunk_count", Integer, nullable=False, server_default="0"),
    Column("page_count", Integer),
    Column("word_count", Integer),
    Column("processing_ms", Float),
    # The ingest job whose result counts; an older job (superseded by a re-ingest) that
    # finishes late writes nothing.
    Column("job_id", UUID(as_uuid=False)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("uq_documents_knowledge_sha256", "knowledge_id", "sha256", unique=True),
    Index("ix_documents_knowledge_created", "knowledge_id", "created_at"),
    Index("ix_documents_metadata", "metadata", postgresql_using="gin"),
)

# `embedding` has no fixed dimension, so bases on different models share one table; an
# HNSW index needs a fixed one, so migration 0005 adds one partial expression index per
# common dimension: `USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE
# dimension = 384` (and 768, 1024, 1536; 3072 as halfvec, over vector's 2000-dim HNSW
# limit). Queries repeat that exact expression and predicate (pipelines/db/chunks.py);
# other dimensions are searched exactly, by a scan. `tsv` weighs the section title above
# the text.
chunks = Table(
    "chunks",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("document_id", UUID(as_uuid=False),
           ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("knowledge_id", UUID(as_uuid=False), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("title", Text),
    Column("page", Integer),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'")),
    Column("dimension", SmallInteger, nullable=False),
    Column("embedding", Vector(), nullable=False),
    Column("tsv", TSVECTOR, Computed(
        "setweight(to_tsvector('english', coalesce(title, '')), 'A') || "
        "setweight(to_tsvector('english', content), 'B')", persisted=True)),
    Index("ix_chunks_document_idx", "document_id", "idx"),
    Index("ix_chunks_knowledge", "knowledge_id"),
    Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
)


# Passkeys (migration 0010_accounts): `id` is the authenticator's credential id (base64url).
webauthn_credentials = Table(
    "webauthn_credentials",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", UUID(as_uuid=False), ForeignKey("users.id", ondelete="CASCADE"),
           nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False, server_default="0"),
    Column("name", Text, nullable=False),
    Column("transports", ARRAY(Text), nullable=False, server_default="{}"),
    Column("aaguid", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_webauthn_credentials_user", "user_id"),
)

# The knowledge marketplace (migration 0010_accounts). An entitlement lets its user read
# and search a base; it outlives its listing being unlisted. No payment is taken.
marketplace_listings = Table(
    "marketplace_listings",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("knowledge_id", UUID(as_uuid=False),
           ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("price", Numeric(12, 2), nullable=False, server_default="0"),
    Column("category", Text, nullable=False),
    Column("license_type", Text, nullable=False),
    Column("preview_enabled", Boolean, nullable=False, server_default=text("false")),
    Column("status", Text, nullable=False, server_default="listed"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("unlisted_at", DateTime(timezone=True)),
    Index("ix_marketplace_listings_listed", text("created_at DESC"), text("id DESC"),
          postgresql_where=text("status = 'listed'")),
    Index("uq_marketplace_listings_base_listed", "knowledge_id", unique=True,
          postgresql_where=text("status = 'listed'")),
)

marketplace_entitlements = Table(
    "marketplace_entitlements",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("listing_id", UUID(as_uuid=False),
           ForeignKey("marketplace_listings.id", ondelete="CASCADE"), nullable=False),
    Column("knowledge_id", UUID(as_uuid=False),
           ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Text, nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
    Column("license_type", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("uq_marketplace_entitlements_user_base", "user_id", "knowledge_id", unique=True),
)

marketplace_ratings = Table(
    "marketplace_ratings",
    metadata,
    Column("listing_id", UUID(as_uuid=False),
           ForeignKey("marketplace_listings.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("rating", SmallInteger, nullable=False),
    Column("review", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rating BETWEEN 1 AND 5", name="ck_marketplace_ratings_range"),
)
