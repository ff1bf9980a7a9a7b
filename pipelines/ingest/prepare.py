"""A file to chunks: partition, check the element count, chunk, check the chunk count.

This is the part of ingestion whose cost depends on the file's contents, so it runs in a
child process (pipelines/ingest/sandbox.py); it returns only plain chunks, which are cheap
to send back, never unstructured's elements.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.ingest.chunk import Chunk, DocumentSummary, chunk_document
from pipelines.ingest.limits import IngestLimits, check_count
from pipelines.ingest.partition import partition_file


@dataclass(frozen=True, slots=True)
class ChunkOptions:
    max_characters: int = 1500
    overlap: int = 150


@dataclass(slots=True)
class PreparedDocument:
    """A document's chunks and summary, and what reading and chunking it took."""

    chunks: list[Chunk]
    summary: DocumentSummary
    partition_ms: float
    chunk_ms: float


def prepare_document(path: Path, content_type: str | None, filename: str,
                     options: ChunkOptions, limits: IngestLimits) -> PreparedDocument:
    """Partition and chunk the file at `path`; DomainErrors for files that cannot be (or may
    not be) read."""
    started = time.perf_counter()
    partitioned = partition_file(path, content_type, filename, limits)
    # Every chunk holds at most `max_characters`, so the text alone says how many chunks
    # there will be at least: a document bound to pass the limit is refused before chunking.
    characters = sum(len(e.text or "") for e in partitioned.elements)
    check_count(filename, "chunks", characters // options.max_characters, limits.max_chunks)
    partitioned_at = time.perf_counter()
    # Paged formats keep chunks within a page, so a cited page number is exact: sections
    # break at pages, and small ones are not combined (unstructured's combining step
    # ignores page boundaries).
    paged = partitioned.page_count is not None
    chunked = chunk_document(partitioned, max_characters=options.max_characters,
                             overlap=options.overlap, multipage_sections=not paged,
                             combine_text_under_n_chars=0 if paged else None)
    check_count(filename, "chunks", len(chunked.chunks), limits.max_chunks)
    return PreparedDocument(
        chunks=chunked.chunks, summary=chunked.summary,
        partition_ms=round((partitioned_at - started) * 1000, 1),
        chunk_ms=round((time.perf_counter() - partitioned_at) * 1000, 1))
