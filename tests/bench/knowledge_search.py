"""Search latency at 10k / 100k chunks and HNSW recall@10 against an exact scan.

Chunks are synthetic: 384-dim vectors around 200 random centres (so neighbourhoods exist,
as with real embeddings), texts of 60 words drawn Zipf-like from 5,000 pseudo-words (so a
query word matches a realistic fraction of chunks, not all of them). They are COPYed in
binary with the HNSW index dropped, and the index is then built in bulk (far faster than
inserting into it row by row), with the migration's exact definition.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import text

from pipelines import retrieve
from pipelines.db import knowledge as knowledge_db
from pipelines.db.engine import async_engine, sync_url
from pipelines.embedders.registry import EmbeddingSpec

DIM = 384
CENTRES = 200
VOCABULARY = 5000
QUERIES = 100
INDEX_SQL = ("CREATE INDEX ix_chunks_embedding_384 ON chunks USING hnsw "
             "((embedding::vector(384)) vector_cosine_ops) WHERE dimension = 384")


def _words(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "vin", "dor", "pel", "qua", "zen", "bri"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _psycopg_url(db_url: str) -> str:
    return sync_url(db_url).replace("postgresql+psycopg://", "postgresql://")


def _setup(db_url: str, base_id: str, document_id: str) -> None:
    with psycopg.connect(_psycopg_url(db_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO knowledge_bases (id, owner_id, name, embedding_provider, "
            "embedding_model, embedding_dimension) VALUES (%s, 'bench', 'search bench', "
            "'hash', 'synthetic', 384)", (base_id,))
        conn.execute(
            "INSERT INTO documents (id, knowledge_id, owner_id, filename, file_type, "
            "size_bytes, sha256, storage_key, status) VALUES (%s, %s, 'bench', 'synthetic.txt', "
            "'txt', 0, %s, 'none', 'processed')", (document_id, base_id, uuid.uuid4().hex))


def _fill(db_url: str, base_id: str, document_id: str, start: int, count: int,
          centres: np.ndarray, vocabulary: list[str], seed: int) -> float:
    """COPY `count` chunks in, then (re)build the HNSW index; returns the build seconds."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    weights /= weights.sum()
    doc_uuid, base_uuid = uuid.UUID(document_id), uuid.UUID(base_id)
    with psycopg.connect(_psycopg_url(db_url), autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX IF EXISTS ix_chunks_embedding_384")
        with conn.cursor() as cur, cur.copy(
            "COPY chunks (id, document_id, knowledge_id, idx, content, dimension, embedding) "
            "FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "uuid", "int4", "text", "int2", "vector"])
            for i in range(start, start + count):
                vector = centres[rng.integers(CENTRES)] + rng.normal(0, 0.6 / DIM**0.5, DIM)
                vector /= np.linalg.norm(vector)
                words = rng.choice(VOCABULARY, size=60, p=weights)
                content = " ".join(vocabulary[w] for w in words)
                copy.write_row([uuid.uuid4(), doc_uuid, base_uuid, i, content, DIM,
                                vector.astype(np.float32)])
        conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        conn.execute(INDEX_SQL)
        built_s = time.perf_counter() - started
        conn.execute("ANALYZE chunks")
    return built_s


async def _measure(db_url: str, base_id: str, size: int, centres: np.ndarray,
                   vocabulary: list[str], build_s: float) -> list[dict[str, Any]]:
    spec = EmbeddingSpec("hash", "synthetic", DIM)
    groups = {spec: [base_id]}
    rng = np.random.default_rng(size)
    queries = []
    for _ in range(QUERIES):
        vector = centres[rng.integers(CENTRES)] + rng.normal(0, 0.6 / DIM**0.5, DIM)
        # Mid-frequency words: each matches a few percent of the chunks.
        words = [vocabulary[int(w)] for w in rng.integers(20, 400, size=3)]
        queries.append((" ".join(words), (vector / np.linalg.norm(vector)).tolist()))
    engine = async_engine(db_url, pool_size=2)
    rows = []
    try:
        for mode in ("vector", "keyword", "hybrid"):
            latencies = []
            for query, vector in [*queries[:5], *queries]:  # the first 5 warm up
                started = time.perf_counter()
                await retrieve.search(engine, groups, query, {spec: vector}, mode=mode,
                                      limit=10, filters={})
                latencies.append((time.perf_counter() - started) * 1000)
            latencies = latencies[5:]
            rows.append({"bench": f"search {mode} @ {size // 1000}k chunks",
                         "p50_ms": round(statistics.median(latencies), 2),
                         "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                         "queries": len(latencies)})
        rows.append({"bench": f"hnsw recall@10 @ {size // 1000}k chunks",
                     "recall_at_10": await _recall(engine, groups, spec, queries),
                     "index_build_s": round(build_s, 1), "ef_search": 100})
    finally:
        await engine.dispose()
    return rows


async def _recall(engine: Any, groups: dict[EmbeddingSpec, list[str]], spec: EmbeddingSpec,
                  queries: list[tuple[str, list[float]]]) -> float:
    """Mean overlap of the index's top 10 with an exact (sequential scan) top 10."""
    overlaps = []
    for _, vector in queries:
        found = []
        for exact in (False, True):
            async with engine.begin() as conn:
                if exact:
                    await conn.execute(text("SET LOCAL enable_indexscan = off"))
                    await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                hits = await retrieve.vector_hits(conn, groups, {spec: vector}, limit=10,
                                                  filters={})
            found.append({h.chunk_id for h in hits})
        overlaps.append(len(found[0] & found[1]) / 10)
    return round(statistics.mean(overlaps), 4)


async def search_latency(db_url: str,
                         sizes: tuple[int, ...] = (10_000, 100_000)) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 1 / DIM**0.5, (CENTRES, DIM))
    vocabulary = _words(random.Random(7))
    base_id, document_id = knowledge_db.new_id(), knowledge_db.new_id()
    _setup(db_url, base_id, document_id)
    rows: list[dict[str, Any]] = []
    filled = 0
    for size in sorted(sizes):
        build_s = _fill(db_url, base_id, document_id, filled, size - filled, centres,
                        vocabulary, seed=size)
        filled = size
        rows += await _measure(db_url, base_id, size, centres, vocabulary, build_s)
    return rows
