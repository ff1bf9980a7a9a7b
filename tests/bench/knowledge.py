"""Knowledge benchmarks: ingestion throughput and search latency with HNSW recall.

`ingestion_throughput(db_url)` runs the worker's pipeline (`ingest_document`) in this
process on a generated 200-page PDF and a 1 MB markdown file: pages/s, chunks/s, and the
partition / chunk / embed / write split, next to the bare SentenceTransformer speed.
`search_latency(db_url)` fills one base with synthetic chunks (clustered random vectors,
Zipf-distributed words) straight through COPY, builds the HNSW index, and times the SQL the
API runs (pipelines.retrieve.search on asyncpg) for each mode at 10k and 100k chunks, with
recall@10 of the index against an exact scan. Query embedding is timed apart.

Standalone: `python -m tests.bench.knowledge [--quick]`; every function returns rows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from pipelines.db import knowledge as knowledge_db
from pipelines.db.engine import sync_url
from pipelines.embedders.registry import EmbeddingSpec, default_spec
from tests.bench.ingest_probe import make_markdown, make_pdf


def _base_and_document(engine: Any, store_dir: Path, path: Path, spec: EmbeddingSpec,
                       content_type: str) -> tuple[str, str]:
    base_id, document_id, job_id = knowledge_db.new_id(), knowledge_db.new_id(), str(uuid.uuid4())
    key = f"bench/{document_id}{path.suffix}"
    (store_dir / "bench").mkdir(parents=True, exist_ok=True)
    (store_dir / key).write_bytes(path.read_bytes())
    with engine.begin() as conn:
        conn.execute(knowledge_db.insert_base(
            base_id=base_id, owner_id="bench", name="bench", description=None, tags=[],
            visibility="private", embedding_provider=spec.provider, embedding_model=spec.model,
            embedding_dimension=spec.dimension))
        conn.execute(knowledge_db.insert_document(
            document_id=document_id, knowledge_id=base_id, owner_id="bench",
            filename=path.name, content_type=content_type, file_type=path.suffix[1:],
            size_bytes=path.stat().st_size, sha256=uuid.uuid4().hex, storage_key=key,
            metadata={}, job_id=job_id))
    return document_id, job_id


def ingestion_throughput(db_url: str, pages: int = 200, md_mb: float = 1.0) -> list[dict[str, Any]]:
    """The worker's ingest pipeline on a `pages`-page PDF and an `md_mb` MB markdown file."""
    from pipelines.embedders.registry import Embedders
    from pipelines.ingest.run import IngestOptions, ingest_document
    from pipelines.storage import LocalFileStore

    spec = default_spec(None, None, None)
    embedders = Embedders(spec)
    engine = create_engine(sync_url(db_url))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp, "store")
        pdf, md = Path(tmp, "corpus.pdf"), Path(tmp, "corpus.md")
        pdf_text = make_pdf(pdf, pages)
        md.write_text(make_markdown(int(md_mb * 1_000_000)))
        # Warm-ups pay the one-off imports (markdown-it, PDFium, unstructured) per process.
        warm, warm_pdf = Path(tmp, "warm.md"), Path(tmp, "warm.pdf")
        warm.write_text(make_markdown(5_000))
        make_pdf(warm_pdf, 2)
        store = LocalFileStore(store_dir)
        for path, content_type, text_bytes in ((warm, "text/markdown", 0),
                                               (warm_pdf, "application/pdf", 0),
                                               (pdf, "application/pdf", pdf_text),
                                               (md, "text/markdown", md.stat().st_size)):
            document_id, job_id = _base_and_document(engine, store_dir, path, spec, content_type)
            started = time.perf_counter()
            result = ingest_document(engine, store, embedders, document_id=document_id,
                                     job_id=job_id, options=IngestOptions(),
                                     report=lambda *a, **k: None)
            total_s = time.perf_counter() - started
            if path in (warm, warm_pdf):
                continue
            t = result["timings_ms"]
            parse_s = (t["partition"] + t["chunk"]) / 1000
            row = {"bench": f"ingest {path.suffix[1:]} ({spec.model.split('/')[-1]})",
                   "text_mb": round(text_bytes / 1e6, 2), "chunks": result["chunk_count"],
                   "total_s": round(total_s, 2), "partition_s": t["partition"] / 1000,
                   "chunk_s": t["chunk"] / 1000, "embed_s": t["embed"] / 1000,
                   "write_s": t["write"] / 1000,
                   "parse_mb_per_s": round(text_bytes / 1e6 / parse_s, 2),
                   "chunks_per_s": round(result["chunk_count"] / total_s, 1),
                   "embed_chunks_per_s": round(result["chunk_count"] / (t["embed"] / 1000), 1)}
            if result["pages"]:
                row["pages_per_s"] = round(result["pages"] / total_s, 1)
            rows.append(row)
    rows.append(_bare_embed_speed(embedders, spec))
    engine.dispose()
    return rows


def _bare_embed_speed(embedders: Any, spec: EmbeddingSpec, n: int = 256) -> dict[str, Any]:
    """The embedder's own speed on ~1000-character texts, for the 80% target."""
    rng = random.Random(3)
    texts = [" ".join(make_markdown(1200, seed=rng.randint(0, 10**6)).split())[:1000]
             for _ in range(n)]
    embedder = embedders.get(spec)
    embedder.embed(texts[:8])
    model = embedder._load() if hasattr(embedder, "_load") else None
    bares, pipes = [], []
    for _ in range(3):  # alternate, so neither side alone pays for noise on a shared machine
        started = time.perf_counter()
        if model is not None:
            model.encode(texts, batch_size=32, normalize_embeddings=True,
                         show_progress_bar=False)
        else:
            embedder.embed(texts)
        bares.append(n / (time.perf_counter() - started))
        started = time.perf_counter()
        for i in range(0, n, 256):
            embedder.embed(texts[i:i + 256])
        pipes.append(n / (time.perf_counter() - started))
    bare, piped = statistics.median(bares), statistics.median(pipes)
    return {"bench": "embed bare vs pipeline batches", "bare_chunks_per_s": round(bare, 1),
            "pipeline_chunks_per_s": round(piped, 1), "ratio": round(piped / bare, 3)}


def search_latency(db_url: str,
                   sizes: tuple[int, ...] = (10_000, 100_000)) -> list[dict[str, Any]]:
    """p50/p95 per mode and HNSW recall@10 at each size (see tests/bench/knowledge_search.py)."""
    from tests.bench.knowledge_search import search_latency as run

    return asyncio.run(run(db_url, sizes=sizes))


def main() -> None:
    from tests.bench.run import print_table
    from tests.bench.stack import bench_services

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with bench_services() as (db_url, _):
        rows = ingestion_throughput(db_url, pages=40 if args.quick else 200,
                                    md_mb=0.2 if args.quick else 1.0)
        print_table(rows)
        sizes = (2_000, 10_000) if args.quick else (10_000, 100_000)
        print_table(search_latency(db_url, sizes=sizes))


if __name__ == "__main__":
    main()
