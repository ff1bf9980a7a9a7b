"""Search across knowledge bases: vector (pgvector HNSW, cosine), keyword (Postgres full
text) and hybrid (reciprocal rank fusion of the two).

The query vectors come in from the caller, one per embedding model of the bases searched
(bases on different models cannot share a vector search); vector hits of different models
are merged by cosine similarity. Fusion is done here in Python on two short top-N lists: it
needs only ranks, and two indexed queries plus a dict merge stay far cheaper than a SQL
FULL JOIN over both candidate sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipelines.db import chunks as chunks_db
from pipelines.embedders.registry import EmbeddingSpec

RRF_K = 60
# Candidates each side contributes to hybrid fusion, at least.
HYBRID_CANDIDATES = 50


@dataclass(slots=True)
class Hit:
    chunk_id: str
    document_id: str
    knowledge_id: str
    title: str | None
    content: str
    page: int | None
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    filename: str | None = None
    vector_score: float | None = None
    keyword_score: float | None = None


def rrf(rankings: Iterable[Sequence[Hashable]], k: int = RRF_K) -> dict[Hashable, float]:
    """Reciprocal rank fusion: each list adds 1 / (k + rank) (rank from 1) to its items."""
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores


def _hit(row: Any, score: float) -> Hit:
    metadata = {**(row.document_metadata or {}), **(row.metadata or {}),
                "filename": row.filename, "file_type": row.file_type, "page": row.page,
                "chunk_index": row.idx}
    return Hit(chunk_id=str(row.id), document_id=str(row.document_id),
               knowledge_id=str(row.knowledge_id), title=row.title, content=row.content,
               page=row.page, score=score, metadata=metadata, filename=row.filename)


async def _tune(conn: AsyncConnection, ef_search: int) -> None:
    # strict_order: keep scanning the HNSW graph until `limit` rows pass the filters
    # (pgvector 0.8), instead of returning fewer when a searched base is a small part of
    # the table; the order stays exact.
    await conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
    await conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))


async def vector_hits(conn: AsyncConnection, groups: Mapping[EmbeddingSpec, Sequence[str]],
                      vectors: Mapping[EmbeddingSpec, Sequence[float]], *, limit: int,
                      filters: Mapping[str, Any], ef_search: int = 100) -> list[Hit]:
    """Nearest chunks by cosine similarity. Run inside a transaction (the HNSW settings
    are `SET LOCAL`)."""
    await _tune(conn, ef_search)
    hits: list[Hit] = []
    for spec, base_ids in groups.items():
        rows = (await conn.execute(chunks_db.vector_search(
            base_ids, spec.dimension, vectors[spec], limit=limit, **filters))).all()
        hits += [replace(_hit(row, float(row.score)), vector_score=float(row.score))
                 for row in rows]
    hits.sort(key=lambda h: -h.score)
    return hits[:limit]


async def keyword_hits(conn: AsyncConnection, base_ids: Sequence[str], query: str, *,
                       limit: int, filters: Mapping[str, Any]) -> list[Hit]:
    """Best full-text matches, ranked among a capped candidate set (see
    `chunks_db.keyword_search`): one indexed query whatever the words' frequency."""
    rows = (await conn.execute(chunks_db.keyword_search(
        base_ids, query, limit=limit, **filters))).all()
    return [replace(_hit(row, float(row.score)), keyword_score=float(row.score))
            for row in rows]


async def search(engine: AsyncEngine, groups: Mapping[EmbeddingSpec, Sequence[str]],
                 query: str, vectors: Mapping[EmbeddingSpec, Sequence[float]], *, mode: str,
                 limit: int, filters: Mapping[str, Any], ef_search: int = 100) -> list[Hit]:
    """The best `limit` chunks of the bases in `groups` (spec -> base ids) for `query`.

    Hybrid runs its two searches at once, each on its own pooled connection: the latency
    is the slower of the two rather than their sum.
    """
    base_ids = [base_id for ids in groups.values() for base_id in ids]

    async def by_vector(n: int) -> list[Hit]:
        async with engine.begin() as conn:
            return await vector_hits(conn, groups, vectors, limit=n, filters=filters,
                                     ef_search=ef_search)

    async def by_keyword(n: int) -> list[Hit]:
        async with engine.connect() as conn:
            return await keyword_hits(conn, base_ids, query, limit=n, filters=filters)

    if mode == "keyword":
        return await by_keyword(limit)
    if mode == "vector":
        return await by_vector(limit)
    candidates = max(HYBRID_CANDIDATES, limit * 3)
    vector_side, keyword_side = await asyncio.gather(by_vector(candidates),
                                                     by_keyword(candidates))
    return fuse(vector_side, keyword_side, limit)


def fuse(by_vector: Sequence[Hit], by_keyword: Sequence[Hit], limit: int) -> list[Hit]:
    """Hybrid results: RRF of both rankings, each hit keeping both of its original scores."""
    scores = rrf([[h.chunk_id for h in by_vector], [h.chunk_id for h in by_keyword]])
    merged: dict[str, Hit] = {}
    for hit in by_vector:
        merged[hit.chunk_id] = replace(hit)
    for hit in by_keyword:
        if hit.chunk_id in merged:
            merged[hit.chunk_id].keyword_score = hit.keyword_score
        else:
            merged[hit.chunk_id] = replace(hit)
    for chunk_id, hit in merged.items():
        hit.score = scores[chunk_id]
    # Equal fused scores are common (1st + 2nd vs 2nd + 1st): semantic similarity decides.
    ranked = sorted(merged.values(), key=lambda h: (
        -h.score, -(h.vector_score if h.vector_score is not None else -2.0),
        -(h.keyword_score or 0.0), h.chunk_id))
    return ranked[:limit]
