"""Chunking partitioned documents by title: sizes, overlap, titles, pages, summary."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("unstructured", reason="knowledge extra not installed")

from pipelines.ingest.chunk import chunk_document  # noqa: E402
from pipelines.ingest.partition import partition_file  # noqa: E402

SENTENCE = "The worker embeds every chunk and writes it with its vector. "


def partition_md(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "doc.md"
    path.write_text(text)
    return partition_file(path, None, "doc.md")


def test_each_section_starts_a_chunk_carrying_its_title(tmp_path: Path) -> None:
    doc = partition_md(tmp_path, f"# Alpha\n\n{SENTENCE * 5}\n\n# Beta\n\n{SENTENCE * 5}\n")
    result = chunk_document(doc, max_characters=1000, combine_text_under_n_chars=0)
    assert [c.title for c in result.chunks] == ["Alpha", "Beta"]
    assert result.chunks[0].text.startswith("Alpha")
    assert [c.index for c in result.chunks] == [0, 1]
    assert result.chunks[1].metadata["section_titles"] == ["Beta"]
    assert "Title" in result.chunks[0].metadata["element_types"]


def test_long_sections_split_under_max_size_with_overlap_and_keep_the_title(
    tmp_path: Path,
) -> None:
    doc = partition_md(tmp_path, f"# Long\n\n{SENTENCE * 60}\n")
    result = chunk_document(doc, max_characters=400, overlap=50)
    assert len(result.chunks) > 5
    assert all(len(c.text) <= 400 for c in result.chunks)
    assert all(c.title == "Long" for c in result.chunks)
    # each continuation starts with the last 50 characters of the piece before it
    first, second = result.chunks[1].text, result.chunks[2].text
    assert second[:50].strip() in first


def test_small_sections_are_combined_below_the_threshold(tmp_path: Path) -> None:
    text = "".join(f"# Part {i}\n\nShort note {i}.\n\n" for i in range(6))
    doc = partition_md(tmp_path, text)
    separate = chunk_document(doc, max_characters=1000, combine_text_under_n_chars=0)
    combined = chunk_document(doc, max_characters=1000, combine_text_under_n_chars=500)
    assert len(separate.chunks) == 6
    assert len(combined.chunks) < 6
    assert combined.chunks[0].metadata["section_titles"][:2] == ["Part 0", "Part 1"]


def test_pdf_chunks_record_their_pages(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    for page in range(1, 4):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(0, 10, f"Chapter {page}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, SENTENCE * 4)
    path = tmp_path / "book.pdf"
    pdf.output(str(path))
    result = chunk_document(partition_file(path, None, "book.pdf"),
                            combine_text_under_n_chars=0)
    assert [(c.title, c.page) for c in result.chunks] == [
        ("Chapter 1", 1), ("Chapter 2", 2), ("Chapter 3", 3)
    ]
    assert result.chunks[1].metadata["pages"] == [2]
    assert result.summary.page_count == 3


def test_summary_counts_words_and_has_no_pages_for_unpaged_formats(tmp_path: Path) -> None:
    doc = partition_md(tmp_path, "# One two\n\nthree four five.\n")
    summary = chunk_document(doc).summary
    assert summary.word_count == 5
    assert summary.page_count is None
    assert summary.element_count == 2


def test_tables_keep_their_html(tmp_path: Path) -> None:
    doc = partition_md(tmp_path, "# T\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    result = chunk_document(doc, combine_text_under_n_chars=0)
    tables = [c for c in result.chunks if "Table" in c.metadata["element_types"]]
    assert tables and "<table>" in tables[0].metadata["text_as_html"]
