"""What the knowledge routes share: who may read or change a base, rendering rows, and
embedding a query in this process.

Query embedding runs in the API process, in a worker thread, with the embedder built once
per process on first use. A warm MiniLM embeds a query in a few milliseconds; sending it
to a worker as a job would add a queue round trip to every search (and to every ask) and
compete with ingestion for the same workers. The price is the model in memory (~100 MB of
weights plus torch) in API processes that serve knowledge routes; processes that never do
never import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from sqlalchemy.engine import Row

from api.context import Services
from pipelines.db import knowledge as knowledge_db
from pipelines.embedders.registry import Embedders, EmbeddingSpec, default_spec
from pipelines.errors import DocumentNotFound, KnowledgeBaseNotFound, PermissionDenied
from schemas.fields import canonical_uuid
from schemas.knowledge import DocumentRead, KnowledgeRead
from schemas.settings import Settings

# Keys of a document's `metadata` that processing fills in (they win over the uploader's).
RESERVED_METADATA = ("pages", "word_count", "processing_ms")


def build_embedders(settings: Settings) -> Embedders:
    key = settings.embedding_api_key or settings.openai_api_key
    return Embedders(
        default_spec(settings.embedding_provider, settings.embedding_model,
                     settings.embedding_dimension),
        openai_api_key=key.get_secret_value() if key else None,
        openai_base_url=settings.embedding_base_url or settings.openai_base_url,
        timeout_s=settings.upstream_timeout_s, max_retries=settings.upstream_max_retries)


def spec_of(base: Row[Any]) -> EmbeddingSpec:
    return EmbeddingSpec(base.embedding_provider, base.embedding_model,
                         base.embedding_dimension)


async def load_base(svc: Services, owner_id: str, base_id: str, *,
                    write: bool = False) -> Row[Any]:
    """The base if readable (404 otherwise); with `write`, only its owner may proceed.
    `base_id` comes from a path (canonical, api.bodies.path_id) or a body (schemas.fields.
    EntityId: canonical if it is a UUID at all); anything else names no base."""
    row = None
    if canonical_uuid(base_id) is not None:
        async with svc.autocommit.connect() as conn:
            row = (await conn.execute(knowledge_db.get_base(base_id, owner_id))).first()
    if row is None:
        raise KnowledgeBaseNotFound(f"No knowledge base with id '{base_id}'.")
    if write and row.owner_id != owner_id:
        raise PermissionDenied("Only the owner of a public knowledge base may change it.")
    return row


async def load_document(svc: Services, owner_id: str, document_id: str, *,
                        write: bool = False) -> Row[Any]:
    """The document if readable (404 otherwise); with `write`, only its owner may proceed.
    `document_id` is canonical (api.bodies.path_id)."""
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(knowledge_db.get_document(document_id, owner_id))).first()
    if row is None:
        raise DocumentNotFound(f"No document with id '{document_id}'.")
    if write and row.owner_id != owner_id:
        raise PermissionDenied("Only the owner of a document may change it.")
    return row


async def search_groups(svc: Services, owner_id: str,
                        base_ids: Sequence[str]) -> dict[EmbeddingSpec, list[str]]:
    """The bases to search, grouped by embedding model; any unreadable id is a 404.
    UUIDs are canonical (schemas.fields.EntityId); anything else names no base."""
    wanted = list(dict.fromkeys(base_ids))
    bad = [b for b in wanted if canonical_uuid(b) is None]
    rows: list[Row[Any]] = []
    if not bad:
        async with svc.autocommit.connect() as conn:
            rows = list((await conn.execute(knowledge_db.readable_bases(wanted, owner_id))).all())
        found = {str(r.id) for r in rows}
        bad = [b for b in wanted if b not in found]
    if bad:
        raise KnowledgeBaseNotFound(f"No knowledge base with id '{bad[0]}'.",
                                    details={"knowledge_ids": bad})
    groups: dict[EmbeddingSpec, list[str]] = {}
    for row in rows:
        groups.setdefault(spec_of(row), []).append(str(row.id))
    return groups


async def embed_query(svc: Services, specs: Sequence[EmbeddingSpec],
                      text: str) -> dict[EmbeddingSpec, list[float]]:
    """One query vector per model, embedded off the event loop."""
    vectors = {}
    for spec in specs:
        embedder = svc.embedders.get(spec)
        vectors[spec] = (await anyio.to_thread.run_sync(embedder.embed, [text]))[0]
    return vectors


def knowledge_read(row: Row[Any]) -> KnowledgeRead:
    return KnowledgeRead(
        id=str(row.id), name=row.name, description=row.description, tags=list(row.tags),
        visibility=row.visibility, owner_id=row.owner_id,
        embedding_provider=row.embedding_provider, embedding_model=row.embedding_model,
        embedding_dimension=row.embedding_dimension, document_count=row.document_count,
        chunk_count=row.chunk_count, created_at=row.created_at, updated_at=row.updated_at)


def document_read(row: Row[Any]) -> DocumentRead:
    metadata = dict(row.metadata or {})
    if row.status == "processed":
        metadata.update(pages=row.page_count, word_count=row.word_count,
                        processing_ms=row.processing_ms)
    return DocumentRead(
        id=str(row.id), knowledge_id=str(row.knowledge_id), filename=row.filename,
        content_type=row.content_type, file_type=row.file_type, size_bytes=row.size_bytes,
        sha256=row.sha256, status=row.status, progress=row.progress, error=row.error,
        chunk_count=row.chunk_count, metadata=metadata,
        job_id=str(row.job_id) if row.job_id else None, created_at=row.created_at,
        updated_at=row.updated_at)
