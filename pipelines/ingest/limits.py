"""What one document may cost to read, checked before the step that would pay for it.

A few bytes can describe unbounded work: a 1.2 MB PDF whose page tree lists one page
200,000 times, an 88 KB .docx whose XML inflates to 60 MB of empty paragraphs, a CSV whose
first line has a million columns. Each check here reads only what is cheap to read —
PDFium's page count, the zip directory and a capped stream of the .docx's XML parts, the
CSV's first line and its line count — and raises DocumentTooLarge before the parser that
would do the work runs. Elements and chunks are counted before chunking and embedding.
Memory and time are bounded apart from these, by the child process that reads the file
(pipelines/ingest/sandbox.py).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import DocumentTooLarge, IngestTimedOut

_READ_BYTES = 1 << 20
# A .docx paragraph or table cell start tag, under any namespace prefix (`<w:p>`, `<w:p/>`,
# `<w:p w:rsidR=…>`; not `<w:pPr>`). Scanned as bytes, so nothing is parsed.
_PARAGRAPH = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?p[\s/>]")
_CELL = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?tc[\s/>]")
# Longer than any match above, so a tag split across two reads is counted once.
_OVERLAP = 64
_MAX_ZIP_MEMBERS = 10_000
# Delimiters unstructured's CSV sniffing may pick; the widest reading of the first line is
# taken, so the column count is never under-estimated.
_CSV_DELIMITERS = b",;\t|"


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Per-document limits (Settings.ingest_*)."""

    max_pages: int = 2000
    max_inflated_bytes: int = 200 * 1024 * 1024
    max_elements: int = 200_000
    max_columns: int = 10_000
    max_cells: int = 2_000_000
    max_chunks: int = 50_000
    timeout_s: float = 600.0
    max_memory_bytes: int = 2 * 1024 * 1024 * 1024


def too_large(filename: str, what: str, limit: int, found: int | None = None,
              *, at_least: bool = False) -> DocumentTooLarge:
    """The error for `filename` passing the limit on `what` (pages, cells, …)."""
    if found is None:
        message = f"{filename!r} needs more {what} than the limit of {limit:,} per document."
    else:
        count = f"{'at least ' if at_least else ''}{found:,}"
        message = f"{filename!r} has {count} {what}, over the limit of {limit:,} per document."
    return DocumentTooLarge(
        message,
        details={"limit": what, "max": limit, **({} if found is None else {"found": found})})


def timed_out(filename: str, timeout_s: float) -> IngestTimedOut:
    """The error for `filename` taking longer than `timeout_s` to ingest."""
    return IngestTimedOut(
        f"{filename!r} took longer than the ingest time limit of {timeout_s:g} s.",
        details={"limit": "seconds", "max": timeout_s})


def check_count(filename: str, what: str, found: int, limit: int) -> None:
    """DocumentTooLarge when `found` of `what` (pages, elements, chunks) exceed `limit`."""
    if found > limit:
        raise too_large(filename, what, limit, found)


def check_docx(path: Path, filename: str, limits: IngestLimits) -> None:
    """The zip directory's member count and inflated sizes, then the XML parts streamed
    (capped at the inflated limit, since a directory can lie) for paragraphs and cells."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        check_count(filename, "zip members", len(members), _MAX_ZIP_MEMBERS)
        declared = sum(member.file_size for member in members)
        if declared > limits.max_inflated_bytes:
            raise too_large(filename, "bytes inflated", limits.max_inflated_bytes, declared)
        inflated = paragraphs = cells = 0
        for member in members:
            if not member.filename.endswith(".xml"):
                continue
            with archive.open(member) as stream:
                tail = b""
                while block := stream.read(_READ_BYTES):
                    inflated += len(block)
                    if inflated > limits.max_inflated_bytes:
                        raise too_large(filename, "bytes inflated", limits.max_inflated_bytes,
                                        inflated, at_least=True)
                    window = tail + block
                    paragraphs += _count_new(_PARAGRAPH, window, len(tail))
                    cells += _count_new(_CELL, window, len(tail))
                    tail = window[-_OVERLAP:]
                    if paragraphs > limits.max_elements:
                        raise too_large(filename, "paragraphs", limits.max_elements,
                                        paragraphs, at_least=True)
                    if cells > limits.max_cells:
                        raise too_large(filename, "table cells", limits.max_cells, cells,
                                        at_least=True)


def _count_new(pattern: re.Pattern[bytes], window: bytes, seen: int) -> int:
    """Matches in `window` that end past its first `seen` bytes (those were counted)."""
    return sum(1 for match in pattern.finditer(window) if match.end() > seen)


def check_csv(path: Path, filename: str, limits: IngestLimits) -> None:
    """Columns from the first line (its widest reading), then rows from the line count: an
    upper bound on the cells the parser would build, known before it runs."""
    with path.open("rb") as file:
        first = file.readline(limits.max_columns * 256 + _READ_BYTES)
        columns = 1 + max(first.count(bytes([delimiter])) for delimiter in _CSV_DELIMITERS)
        if columns > limits.max_columns:  # counted in as much of the line as was read
            raise too_large(filename, "columns", limits.max_columns, columns,
                            at_least=not first.endswith(b"\n"))
        rows = 1
        while block := file.read(_READ_BYTES):
            rows += block.count(b"\n")
            if rows * columns > limits.max_cells:
                raise too_large(filename, "table cells", limits.max_cells, rows * columns,
                                at_least=True)
