"""Turn an uploaded file into unstructured `Element`s, offline and fast.

Strategy, per measured cost (see tests/bench/ingest_probe.py):

- One partitioner per type, called directly (never `partition.auto`, which sniffs with
  libmagic and imports every partitioner). `languages=["eng"]` everywhere: the default
  ("auto") runs langdetect over the whole text.
- unstructured classifies each text block (narrative / title / text) with spaCy's
  `en_core_web_sm`, which it downloads at first use (fails offline) and which then costs
  ~95% of partition time. `_use_rule_based_nlp` swaps unstructured's one model loader for
  regex sentences/tokens and a small verb lexicon, which answer the same questions —
  sentence count, "has a verb" — with no model, no spaCy call and no network.
- PDFs: unstructured's `partition_pdf` imports unstructured-inference and OpenCV even for
  `strategy="fast"`, and unstructured-inference requires torch, onnxruntime and
  transformers. Its fast strategy is pdfminer.six text boxes fed to `element_from_text`;
  we feed it paragraphs built from PDFium's text lines instead (pypdfium2): pdfminer's
  layout analysis ran at ~0.04-0.08 MB of text/s, PDFium's extraction at ~1.7 MB/s.
  No OCR: a scanned PDF has no text and fails as `EmptyDocument`.
- unstructured pings a telemetry endpoint at import unless opted out: `opt_out_of_telemetry`
  sets the opt-out before the first import.

Each type's cheap size checks (pipelines/ingest/limits.py) run before its parser. A parser's
failure reaches the user as a code and a plain sentence; what the parser said goes to the
log, since it can name server paths and library internals.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import (
    CorruptDocument,
    DocumentTooLarge,
    DomainError,
    EmptyDocument,
    UnsupportedFileType,
)
from pipelines.ingest.limits import IngestLimits, check_count, check_csv, check_docx, too_large

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

logger = logging.getLogger(__name__)

_EXTENSIONS = {
    ".txt": "txt", ".text": "txt", ".log": "txt",
    ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".csv": "csv",
    ".json": "json",
}
_CONTENT_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md", "text/x-markdown": "md",
    "text/html": "html", "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv", "application/csv": "csv",
    "application/json": "json",
}
_MIME = {  # recorded as element `filetype`
    "txt": "text/plain", "md": "text/markdown", "html": "text/html", "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "csv": "text/csv", "json": "application/json",
}
SUPPORTED_TYPES = frozenset(_MIME)
_LABELS = {  # "could not be read as …"
    "txt": "plain text", "md": "Markdown", "html": "HTML", "pdf": "a PDF",
    "docx": "a Word document", "csv": "CSV", "json": "JSON",
}


@dataclass(slots=True)
class PartitionedDocument:
    """A file's elements in reading order; `page_count` is known for paged formats only."""

    file_type: str
    elements: list[Element]
    page_count: int | None = None


def detect_file_type(filename: str, content_type: str | None) -> str | None:
    """The file's type (a key of `SUPPORTED_TYPES`) from its extension, else its MIME type."""
    by_extension = _EXTENSIONS.get(Path(filename).suffix.lower())
    if by_extension:
        return by_extension
    if content_type:
        return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return None


def is_supported(filename: str, content_type: str | None) -> bool:
    """True when `partition_file` can read this upload; cheap, imports nothing heavy."""
    return detect_file_type(filename, content_type) is not None


def partition_file(path: Path, content_type: str | None, filename: str,
                   limits: IngestLimits | None = None) -> PartitionedDocument:
    """Partition the file at `path` (uploaded as `filename`) into elements, within `limits`."""
    limits = limits or IngestLimits()
    file_type = detect_file_type(filename, content_type)
    if file_type is None:
        raise UnsupportedFileType(
            f"{filename!r} ({content_type or 'no content type'}) is not a supported type; "
            f"supported: {', '.join(sorted(SUPPORTED_TYPES))}",
            details={"filename": filename, "content_type": content_type},
        )
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{filename!r} is empty")
    _import_unstructured()
    try:
        elements, page_count = _PARTITIONERS[file_type](path, filename, limits)
    except DomainError:
        raise
    except MemoryError:
        raise too_large(filename, "bytes of memory", limits.max_memory_bytes) from None
    except RecursionError:
        raise DocumentTooLarge(f"{filename!r} is nested too deeply to read.",
                               details={"limit": "nesting"}) from None
    except Exception as exc:  # a parser's failure on this file is the file's fault
        logger.warning("partition of %r as %s failed", filename, file_type, exc_info=True)
        raise CorruptDocument(
            f"{filename!r} could not be read as {_LABELS[file_type]}.",
            details={"filename": filename, "file_type": file_type},
        ) from exc
    check_count(filename, "elements", len(elements), limits.max_elements)
    elements = [e for e in elements if (e.text or "").strip()]
    if not elements:
        hint = " (a scanned PDF needs OCR, which is not enabled)" if file_type == "pdf" else ""
        raise EmptyDocument(f"{filename!r} contains no extractable text{hint}")
    for element in elements:
        element.metadata.filename = filename
        element.metadata.filetype = _MIME[file_type]
    return PartitionedDocument(file_type, elements, page_count)


# -- per-type partitioners: (path, filename, limits) -> (elements, page count or None) --------

_FAST: dict[str, Any] = {"languages": ["eng"], "detect_language_per_element": False}


def _txt(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    from unstructured.partition.text import partition_text

    return partition_text(str(path), **_FAST), None


def _md(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    # Elements straight from markdown-it's tokens (pipelines/ingest/markdown.py): rendering
    # to HTML for partition_html re-parses and re-classifies what the tokens already say.
    from unstructured.file_utils.encoding import read_txt_file

    from pipelines.ingest.markdown import markdown_elements

    _, text = read_txt_file(filename=str(path))
    return markdown_elements(text), None


def _html(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    from unstructured.partition.html import partition_html

    return partition_html(str(path), **_FAST), None


def _docx(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    from unstructured.partition.docx import partition_docx

    check_docx(path, filename, limits)
    elements = partition_docx(str(path), include_page_breaks=False, **_FAST)
    pages = {e.metadata.page_number for e in elements if e.metadata.page_number}
    return elements, (max(pages) if pages else None)


def _csv(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    from unstructured.errors import UnprocessableEntityError
    from unstructured.partition.csv import partition_csv

    check_csv(path, filename, limits)
    try:
        return partition_csv(str(path), include_header=True, **_FAST), None
    except UnprocessableEntityError:  # unstructured's own cell count (CSV_MAX_CELLS)
        raise too_large(filename, "table cells", limits.max_cells) from None


def _json(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    # unstructured's partition_json only reads its own serialised-elements schema, so
    # arbitrary JSON is flattened here: one section per top-level key or list item.
    from unstructured.documents.elements import Text, Title

    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(data, dict | list):  # a Title and a Text per key, a Text per item
        check_count(filename, "elements", len(data) * (2 if isinstance(data, dict) else 1),
                    limits.max_elements)
    elements: list[Element] = []
    if isinstance(data, dict):
        for key, value in data.items():
            elements.append(Title(text=str(key)))
            elements.append(Text(text="\n".join(_flatten(value, str(key)))))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            elements.append(Text(text="\n".join(_flatten(item, f"[{i}]"))))
    else:
        elements.append(Text(text=str(data)))
    return elements, None


def _flatten(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    elif value is not None and value != "":
        yield f"{path}: {value}"


_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
_LINE_BREAK = re.compile(r"\s*\n\s*")


def _pdf(path: Path, filename: str, limits: IngestLimits) -> tuple[list[Element], int | None]:
    # PDFium (pypdfium2's wheels, no system libraries) gives each page's text lines with
    # their boxes; lines are joined into paragraphs where the vertical gap or the line
    # height changes (a heading's larger font), and each paragraph is classified by
    # unstructured's `element_from_text`, as its `fast` strategy does with pdfminer boxes.
    import pypdfium2 as pdfium
    from unstructured.partition.text import element_from_text

    elements: list[Element] = []
    document = pdfium.PdfDocument(str(path))
    try:
        # PDFium counts the page tree's leaves without loading a page: a tree that lists
        # one page 200,000 times is refused here instead of extracted 200,000 times.
        page_count = len(document)
        check_count(filename, "pages", page_count, limits.max_pages)
        for page_number in range(1, page_count + 1):
            page = document[page_number - 1]
            textpage = page.get_textpage()
            try:
                for paragraph in _paragraphs(textpage):
                    text = _LINE_BREAK.sub(" ", _HYPHEN_BREAK.sub(r"\1\2", paragraph)).strip()
                    if text:
                        element = element_from_text(text)
                        element.metadata.page_number = page_number
                        elements.append(element)
                check_count(filename, "elements", len(elements), limits.max_elements)
            finally:
                textpage.close()
                page.close()
    finally:
        document.close()
    return elements, page_count


def _paragraphs(textpage: Any) -> Iterator[str]:
    """A page's text lines (PDFium's text rectangles, in content order) grouped into
    paragraphs: a new one starts after a gap wider than 0.8 of a line's box (lines of one
    paragraph sit about half a box apart), when the box height changes by 30% (a heading's
    font), or when the text moves back up the page (a new column or box)."""
    lines: list[str] = []
    previous: tuple[float, float] | None = None  # (bottom, height) of the last line
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        line = textpage.get_text_bounded(left, bottom, right, top).strip()
        if not line:
            continue
        height = top - bottom
        if previous is not None and lines:
            last_bottom, last_height = previous
            gap = last_bottom - top
            if (gap > 0.8 * max(height, last_height) or top > last_bottom + last_height
                    or abs(height - last_height) > 0.3 * max(height, last_height)):
                yield "\n".join(lines)
                lines = []
        lines.append(line)
        previous = (bottom, height)
    if lines:
        yield "\n".join(lines)


_PARTITIONERS = {
    "txt": _txt, "md": _md, "html": _html, "pdf": _pdf, "docx": _docx, "csv": _csv,
    "json": _json,
}


# -- unstructured set-up: telemetry opt-out and the rule-based NLP seam ------------------------

_setup_lock = threading.Lock()
_set_up = False


def _import_unstructured() -> None:
    global _set_up
    if _set_up:
        return
    with _setup_lock:
        if _set_up:
            return
        opt_out_of_telemetry()
        _use_rule_based_nlp()
        _set_up = True


def opt_out_of_telemetry() -> None:
    """Set the environment that keeps unstructured from phoning home; before its import."""
    # unstructured/__init__ sends a telemetry request (and runs nvidia-smi) on import
    # unless one of these is non-empty; partition calls check them too.
    os.environ["SCARF_NO_ANALYTICS"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")


def _use_rule_based_nlp() -> None:
    # unstructured.nlp.tokenize reaches spaCy only through `_get_nlp()` (looked up at call
    # time by `_run_pipeline`); its own version loads en_core_web_sm or downloads it.
    # Its callers read `nlp.max_length`, `doc.sents[*].text` and `token.text`/`token.tag_`.
    import unstructured.nlp.tokenize as tokenize

    if not callable(getattr(tokenize, "_get_nlp", None)):
        raise RuntimeError("unstructured.nlp.tokenize._get_nlp is gone: revisit the NLP seam")
    nlp = _RuleBasedNLP()
    tokenize._get_nlp = lambda: nlp  # type: ignore[assignment]


# Enough to tell "a sentence with a verb" (narrative) from a heading-like fragment:
# auxiliaries, modals and common verbs, plus -ed/-ing forms (tagged VB* like spaCy would).
_VERBS = frozenset(
    """be am is are was were been being have has had having do does did done doing can could
    will would shall should may might must need needs let lets get gets got make makes made
    take takes took use uses used provide provides include includes contain contains show
    shows see sees saw go goes went come comes came give gives gave keep keeps run runs ran
    find finds found know knows knew think thinks say says said tell tells call calls allow
    allows require requires support supports help helps work works set sets put puts read
    reads write writes wrote become becomes became seem seems mean means describe describes
    explain explains return returns create creates add adds store stores send sends""".split()
)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


class _Span:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def tag_(self) -> str:
        # Computed on demand: word_tokenize (the caps-ratio check) reads only `text`.
        lower = self.text.lower()
        is_verb = lower in _VERBS or (
            len(lower) > 4 and lower.isalpha() and lower.endswith(("ed", "ing"))
        )
        return "VB" if is_verb else "NN"


class _Doc:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def sents(self) -> list[_Span]:
        return [_Span(s) for s in _SENTENCE_BREAK.split(self.text.strip()) if s]

    def __iter__(self) -> Iterator[_Token]:
        return (_Token(m.group()) for m in _TOKEN.finditer(self.text))


class _RuleBasedNLP:
    """Regex sentences and tokens, lexicon verbs: the answers unstructured's classifier needs."""

    max_length = 1_000_000

    def __call__(self, text: str) -> _Doc:
        return _Doc(text)
