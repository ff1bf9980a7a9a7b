"""Document bombs are refused by a cheap check before the step that would pay for them, and
a file that cannot be read says so with a code and a plain sentence, never the internals."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("unstructured", reason="knowledge extra not installed")

from pipelines.errors import CorruptDocument, DocumentTooLarge  # noqa: E402
from pipelines.ingest.limits import IngestLimits  # noqa: E402
from pipelines.ingest.partition import partition_file  # noqa: E402
from pipelines.ingest.prepare import ChunkOptions, prepare_document  # noqa: E402
from tests.integration.knowledge_files import (  # noqa: E402
    docx_bytes,
    docx_paragraph_bomb,
    pdf_page_tree_bomb,
    wide_csv,
)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def refusal(path: Path, content_type: str | None, limits: IngestLimits) -> DocumentTooLarge:
    with pytest.raises(DocumentTooLarge) as caught:
        partition_file(path, content_type, path.name, limits)
    assert caught.value.code == "DOCUMENT_TOO_LARGE"
    return caught.value


def test_a_pdf_listing_one_page_200000_times_is_refused_by_its_page_count(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bomb.pdf"
    path.write_bytes(pdf_page_tree_bomb())

    error = refusal(path, "application/pdf", IngestLimits())

    assert error.details == {"limit": "pages", "max": 2000, "found": 200_000}
    assert error.message == ("'bomb.pdf' has 200,000 pages, over the limit of 2,000 per "
                             "document.")


def test_a_docx_inflating_to_60_mb_of_empty_paragraphs_is_refused_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_paragraph_bomb())
    assert path.stat().st_size < 100_000

    error = refusal(path, DOCX, IngestLimits())

    assert error.details["limit"] == "paragraphs"
    assert error.details["found"] > 200_000


def test_a_docx_whose_zip_directory_declares_more_than_the_inflated_limit_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "design.docx"
    path.write_bytes(docx_bytes())

    error = refusal(path, DOCX, IngestLimits(max_inflated_bytes=10_000))

    assert error.details["limit"] == "bytes inflated"
    assert error.details["found"] > 10_000


def test_a_csv_with_a_million_columns_is_refused_by_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(wide_csv())

    error = refusal(path, "text/csv", IngestLimits())

    assert error.details["limit"] == "columns"
    assert error.details["found"] > 10_000


def test_a_tall_csv_is_refused_by_its_cell_count_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "tall.csv"
    path.write_text("a,b,c\n" + "1,2,3\n" * 2000)

    error = refusal(path, "text/csv", IngestLimits(max_cells=1000))

    assert error.details["limit"] == "table cells"


def test_more_elements_than_the_limit_are_refused_before_chunking(tmp_path: Path) -> None:
    path = tmp_path / "many.md"
    path.write_text("\n\n".join(f"Paragraph {i} says something." for i in range(50)))

    error = refusal(path, None, IngestLimits(max_elements=10))

    assert error.details == {"limit": "elements", "max": 10, "found": 50}


def test_more_chunks_than_the_limit_are_refused_before_embedding(tmp_path: Path) -> None:
    path = tmp_path / "long.md"
    path.write_text("\n\n".join(f"# Section {i}\n\nIt has its own text, number {i}."
                                for i in range(20)))

    with pytest.raises(DocumentTooLarge) as caught:
        prepare_document(path, None, "long.md", ChunkOptions(max_characters=100, overlap=0),
                         IngestLimits(max_chunks=5))

    assert caught.value.details["limit"] == "chunks"


def test_a_corrupt_pdf_fails_with_a_code_and_a_plain_message_naming_no_internals(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\nthis is not really a pdf\n")

    with pytest.raises(CorruptDocument) as caught:
        partition_file(path, "application/pdf", "broken.pdf", IngestLimits())

    assert caught.value.code == "CORRUPT_DOCUMENT"
    assert caught.value.message == "'broken.pdf' could not be read as a PDF."
    assert caught.value.details == {"filename": "broken.pdf", "file_type": "pdf"}


def test_json_nested_too_deeply_is_refused_without_naming_the_exception(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)

    error = refusal(path, None, IngestLimits())

    assert error.message == "'deep.json' is nested too deeply to read."
    assert "Error" not in error.message
