"""Partitioning real files, generated here, into elements: types, titles, pages, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("unstructured", reason="knowledge extra not installed")

from pipelines.errors import CorruptDocument, EmptyDocument, UnsupportedFileType  # noqa: E402
from pipelines.ingest.partition import (  # noqa: E402
    detect_file_type,
    is_supported,
    partition_file,
)
from tests.offline import no_network_site  # noqa: E402

PARAGRAPH = (
    "The ingestion worker reads each uploaded document. It splits the text into sections "
    "and stores every chunk with its vector."
)


def make_pdf(path: Path, pages: int) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(0, 10, f"Chapter {page} Overview", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, f"Page {page} text. {PARAGRAPH}")
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Installation", level=1)
    document.add_paragraph(PARAGRAPH)
    document.add_heading("Configuration", level=2)
    document.add_paragraph("Set the worker count. " + PARAGRAPH)
    document.save(str(path))


def texts(doc) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(e.text for e in doc.elements)


def titles(doc) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.text for e in doc.elements if e.category == "Title"]


def test_pdf_keeps_page_numbers_and_counts_pages(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    make_pdf(path, 3)
    doc = partition_file(path, "application/pdf", "manual.pdf")
    assert doc.file_type == "pdf"
    assert doc.page_count == 3
    pages = {e.metadata.page_number for e in doc.elements}
    assert pages == {1, 2, 3}
    page_two = [e.text for e in doc.elements if e.metadata.page_number == 2]
    assert any("Page 2 text" in t for t in page_two)
    assert "Chapter 2 Overview" in titles(doc)
    assert all(e.metadata.filename == "manual.pdf" for e in doc.elements)


def test_docx_headings_become_titles(tmp_path: Path) -> None:
    path = tmp_path / "guide.docx"
    make_docx(path)
    doc = partition_file(path, None, "guide.docx")
    assert titles(doc) == ["Installation", "Configuration"]
    assert "Set the worker count." in texts(doc)


def test_markdown_headings_become_titles_and_tables_survive(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(
        f"# Setup\n\n{PARAGRAPH}\n\n## Limits\n\n| name | max |\n| --- | --- |\n"
        "| upload | 50 MB |\n\n- first item\n- second item\n"
    )
    doc = partition_file(path, "text/markdown", "notes.md")
    assert titles(doc) == ["Setup", "Limits"]
    categories = {e.category for e in doc.elements}
    assert {"Table", "ListItem"} <= categories
    assert "50 MB" in texts(doc)


def test_html_table_is_a_table_element(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        f"<html><body><h1>Pricing</h1><p>{PARAGRAPH}</p><table><tr><th>plan</th>"
        "<th>price</th></tr><tr><td>basic</td><td>10</td></tr></table></body></html>"
    )
    doc = partition_file(path, "text/html", "page.html")
    tables = [e for e in doc.elements if e.category == "Table"]
    assert len(tables) == 1 and "basic" in tables[0].text
    assert tables[0].metadata.text_as_html
    assert titles(doc) == ["Pricing"]


def test_csv_becomes_a_table_with_its_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("city,population\nLisbon,545000\nPorto,232000\n")
    doc = partition_file(path, "text/csv", "data.csv")
    assert [e.category for e in doc.elements] == ["Table"]
    assert "population" in doc.elements[0].text and "Porto" in doc.elements[0].text


def test_json_is_flattened_into_one_section_per_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server": {"port": 8080, "hosts": ["a", "b"]}, "debug": True}))
    doc = partition_file(path, "application/json", "config.json")
    assert titles(doc) == ["server", "debug"]
    assert "server.port: 8080" in texts(doc)
    assert "server.hosts[1]: b" in texts(doc)


def test_plain_text_is_partitioned_into_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "readme.txt"
    path.write_text(f"OVERVIEW\n\n{PARAGRAPH}\n\nSecond paragraph is here. {PARAGRAPH}\n")
    doc = partition_file(path, "text/plain", "readme.txt")
    assert len(doc.elements) == 3
    assert doc.elements[0].category == "Title"
    assert doc.elements[1].category == "NarrativeText"


def test_corrupt_pdf_fails_as_corrupt_document(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage without xref")
    with pytest.raises(CorruptDocument, match="broken.pdf"):
        partition_file(path, "application/pdf", "broken.pdf")


def test_corrupt_docx_fails_as_corrupt_document(tmp_path: Path) -> None:
    path = tmp_path / "broken.docx"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(CorruptDocument):
        partition_file(path, None, "broken.docx")


def test_invalid_json_fails_as_corrupt_document(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(CorruptDocument):
        partition_file(path, None, "broken.json")


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.md"])
def test_empty_file_fails_as_empty_document(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(EmptyDocument, match="empty"):
        partition_file(path, None, name)


def test_whitespace_only_file_fails_as_empty_document(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n   \n")
    with pytest.raises(EmptyDocument):
        partition_file(path, None, "blank.txt")


def test_pdf_without_text_fails_as_empty_document(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(EmptyDocument, match="OCR"):
        partition_file(path, None, "scan.pdf")


def test_unsupported_type_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(UnsupportedFileType, match="photo.png"):
        partition_file(path, "image/png", "photo.png")


def test_is_supported_uses_extension_then_content_type() -> None:
    assert is_supported("a.PDF", None)
    assert is_supported("upload", "text/markdown; charset=utf-8")
    assert not is_supported("a.exe", "application/octet-stream")
    assert not is_supported("a.png", None)
    assert detect_file_type("x.bin", "application/vnd.openxmlformats-officedocument"
                            ".wordprocessingml.document") == "docx"


def test_partition_works_with_the_network_unreachable(tmp_path: Path) -> None:
    site = no_network_site(tmp_path)
    make_pdf(tmp_path / "a.pdf", 2)
    make_docx(tmp_path / "a.docx")
    (tmp_path / "a.md").write_text(f"# Title\n\n{PARAGRAPH}\n")
    (tmp_path / "a.txt").write_text(f"INTRO\n\n{PARAGRAPH}\n")
    (tmp_path / "a.html").write_text(f"<h1>T</h1><p>{PARAGRAPH}</p>")
    script = textwrap.dedent(
        f"""
        import socket, sys
        from pathlib import Path
        try:
            socket.getaddrinfo("example.invalid", 80)
        except OSError:
            pass
        else:
            sys.exit("sitecustomize did not disable the network")
        open({str(tmp_path / "network-attempts.log")!r}, "w").close()  # forget the self-check
        from pipelines.ingest.partition import partition_file
        from pipelines.ingest.chunk import chunk_document
        for name in ["a.pdf", "a.docx", "a.md", "a.txt", "a.html"]:
            doc = partition_file(Path({str(tmp_path)!r}) / name, None, name)
            assert chunk_document(doc).chunks, name
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "HF_HUB_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])])
    attempts = tmp_path / "network-attempts.log"
    attempts.write_text("")
    env["NETWORK_ATTEMPTS_LOG"] = str(attempts)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    assert attempts.read_text() == ""
