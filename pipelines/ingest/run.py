"""One document's ingestion: partition → chunk → embed in batches → replace its chunks.

Partitioning and chunking run in a child process with memory and time limits
(pipelines/ingest/sandbox.py); every size limit is checked before the step it guards
(pipelines/ingest/limits.py), and the whole ingestion has one deadline, checked again
between embedding batches. A document that passes a limit ends `failed` with its code
(DOCUMENT_TOO_LARGE, INGEST_TIMEOUT), and nothing of it is written.

Nothing is written until every vector exists: the old chunks are deleted and the new ones
inserted in one transaction at the end, under a row lock on the document that also checks
this job still owns it (a re-ingest hands the document to a newer job; a late older job
then writes nothing). A failure leaves the previous chunks, if any, untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from pipelines import metrics
from pipelines.db import chunks as chunks_db
from pipelines.db import knowledge as knowledge_db
from pipelines.db.tables import knowledge_bases
from pipelines.embedders.registry import Embedders, EmbeddingSpec
from pipelines.errors import DomainError
from pipelines.ingest.chunk import Chunk
from pipelines.ingest.limits import IngestLimits, timed_out
from pipelines.ingest.prepare import ChunkOptions
from pipelines.ingest.sandbox import read_document
from pipelines.storage import FileStore

# (fraction 0..1, event data) -> None; raises JobCancelled to stop.
Report = Callable[..., None]

_PARTITIONED_AT = 0.10
_CHUNKED_AT = 0.15
_EMBEDDED_AT = 0.95


@dataclass(frozen=True, slots=True)
class IngestOptions:
    max_characters: int = 1500
    overlap: int = 150
    batch_size: int = 256  # texts per embedder call and per progress report
    limits: IngestLimits = IngestLimits()


def embedding_text(chunk: Chunk) -> str:
    """What is embedded: the chunk, led by its section title when the text lacks it (later
    pieces of a long section would otherwise lose the context their title gives)."""
    if chunk.title and not chunk.text.startswith(chunk.title):
        return f"{chunk.title}\n{chunk.text}"
    return chunk.text


def ingest_document(engine: Engine, store: FileStore, embedders: Embedders, *,
                    document_id: str, job_id: str, options: IngestOptions,
                    report: Report) -> dict[str, Any]:
    """Ingest the document owned by `job_id`; returns the job result. A `DomainError`
    (corrupt, empty, unsupported file) marks the document failed and propagates."""
    with engine.connect() as conn:
        doc = conn.execute(knowledge_db.document_for_job(document_id, job_id)).first()
        base = None if doc is None else conn.execute(
            select(knowledge_bases).where(knowledge_bases.c.id == doc.knowledge_id)).first()
    if doc is None or base is None:
        return {"document_id": document_id, "superseded": True}
    _set(engine, document_id, job_id, status="processing", progress=0.0, error=None)
    spec = EmbeddingSpec(base.embedding_provider, base.embedding_model,
                         base.embedding_dimension)
    started = time.perf_counter()
    deadline = time.monotonic() + options.limits.timeout_s
    try:
        result = _run(engine, store, embedders.get(spec), doc, job_id, spec, options, report,
                      started, deadline)
    except DomainError as exc:
        _set(engine, document_id, job_id, status="failed",
             error={"code": exc.code, "message": exc.message})
        raise
    except Exception:
        # Transient or internal: the job may be retried, which sets `processing` again.
        _set(engine, document_id, job_id, status="failed",
             error={"code": "PROCESSING_ERROR", "message": "Ingestion failed unexpectedly."})
        raise
    metrics.record_ingest(result)
    return result


def _set(engine: Engine, document_id: str, job_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(knowledge_db.set_document_status(document_id, job_id, **values))


def _run(engine: Engine, store: FileStore, embedder: Any, doc: Any, job_id: str,
         spec: EmbeddingSpec, options: IngestOptions, report: Report,
         started: float, deadline: float) -> dict[str, Any]:
    chunking = ChunkOptions(max_characters=options.max_characters, overlap=options.overlap)
    with store.local_copy(doc.storage_key) as path:
        prepared = read_document(path, doc.content_type, doc.filename, chunking,
                                 options.limits, deadline)
    chunked_at = time.perf_counter()
    # The child's chunking time is its own; the rest of the wait (reading, and starting the
    # child) counts as partitioning.
    partitioned_at = chunked_at - prepared.chunk_ms / 1000
    report(_PARTITIONED_AT, stage="partitioned", elements=prepared.summary.element_count)
    chunks = prepared.chunks
    report(_CHUNKED_AT, stage="chunked", chunks=len(chunks))

    texts = [embedding_text(c).replace("\x00", "") for c in chunks]
    vectors: list[list[float]] = []
    for start in range(0, len(texts), options.batch_size):
        if time.monotonic() > deadline:
            raise timed_out(doc.filename, options.limits.timeout_s)
        vectors.extend(embedder.embed(texts[start:start + options.batch_size]))
        done = len(vectors)
        report(_CHUNKED_AT + (_EMBEDDED_AT - _CHUNKED_AT) * done / len(texts),
               stage="embedding", embedded=done, total=len(texts))
    embedded_at = time.perf_counter()

    summary = prepared.summary
    rows = [{"id": chunks_db.new_id(), "document_id": doc.id, "knowledge_id": doc.knowledge_id,
             "idx": c.index, "content": c.text.replace("\x00", ""),
             "title": (c.title or "").replace("\x00", "") or None, "page": c.page,
             "metadata": c.metadata, "dimension": spec.dimension, "embedding": vector}
            for c, vector in zip(chunks, vectors, strict=True)]
    with engine.begin() as conn:
        if conn.execute(knowledge_db.lock_for_job(doc.id, job_id)).first() is None:
            return {"document_id": str(doc.id), "superseded": True}
        conn.execute(chunks_db.delete_for_document(doc.id))
        if rows:
            conn.execute(chunks_db.insert_chunks(), rows)
        processing_ms = round((time.perf_counter() - started) * 1000, 1)
        conn.execute(knowledge_db.set_document_status(
            doc.id, job_id, status="processed", progress=1.0, error=None,
            chunk_count=len(rows), page_count=summary.page_count,
            word_count=summary.word_count, processing_ms=processing_ms))
    written_at = time.perf_counter()
    return {
        "document_id": str(doc.id), "status": "processed", "chunk_count": len(rows),
        "pages": summary.page_count, "word_count": summary.word_count,
        "processing_ms": processing_ms,
        "timings_ms": {
            "partition": round((partitioned_at - started) * 1000, 1),
            "chunk": round((chunked_at - partitioned_at) * 1000, 1),
            "embed": round((embedded_at - chunked_at) * 1000, 1),
            "write": round((written_at - embedded_at) * 1000, 1),
        },
    }
