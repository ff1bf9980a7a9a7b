"""Knowledge actors: ingest one uploaded document into its base."""

from __future__ import annotations

import time
from typing import Any

from pipelines.db import knowledge as knowledge_db
from pipelines.ingest.limits import IngestLimits
from pipelines.ingest.run import IngestOptions, ingest_document
from schemas.knowledge import IngestJob
from workers.actors import job_actor
from workers.jobs import SyncJob

_DOCUMENT_PROGRESS_INTERVAL_S = 0.5


@job_actor("ingest", max_retries=3)
def ingest_document_job(job: SyncJob, spec: IngestJob) -> dict[str, Any]:
    """Publishes started, progress (partitioned, chunked, embedding n/m), then succeeded
    with chunk count, pages, word count and timings — or failed with the file's problem
    (CORRUPT_DOCUMENT, EMPTY_DOCUMENT, UNSUPPORTED_FILE_TYPE, DOCUMENT_TOO_LARGE,
    INGEST_TIMEOUT), the document marked alike.

    Safe to re-run: chunks are replaced in one transaction at the end, and only while the
    document still belongs to this job. CPU-bound: runs in a thread of a CPU worker process.
    """
    res = job.resources
    last_saved = 0.0

    def report(fraction: float, **data: Any) -> None:
        nonlocal last_saved
        now = time.monotonic()
        if now - last_saved >= _DOCUMENT_PROGRESS_INTERVAL_S:
            last_saved = now
            with res.engine.begin() as conn:
                conn.execute(knowledge_db.set_document_status(
                    spec.document_id, job.job_id, progress=round(fraction, 4)))
        job.progress(fraction, document_id=spec.document_id, **data)

    settings = res.settings
    limits = IngestLimits(
        max_pages=settings.ingest_max_pages,
        max_inflated_bytes=settings.ingest_max_inflated_bytes,
        max_elements=settings.ingest_max_elements, max_columns=settings.ingest_max_columns,
        max_cells=settings.ingest_max_cells, max_chunks=settings.ingest_max_chunks,
        timeout_s=settings.ingest_timeout_s, max_memory_bytes=settings.ingest_max_memory_bytes)
    options = IngestOptions(max_characters=settings.chunk_max_characters,
                            overlap=settings.chunk_overlap,
                            batch_size=settings.embedding_batch_size, limits=limits)
    return ingest_document(res.engine, res.file_store, res.embedders,
                           document_id=spec.document_id, job_id=job.job_id,
                           options=options, report=report)
