"""Chunk a partitioned document by title into plain `Chunk`s, with a document summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.ingest.partition import PartitionedDocument

DEFAULT_MAX_CHARACTERS = 1500
DEFAULT_OVERLAP = 150


@dataclass(slots=True)
class Chunk:
    """One retrievable piece of a document; `title` is the section it belongs to."""

    index: int
    text: str
    title: str | None
    page: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DocumentSummary:
    page_count: int | None
    word_count: int
    element_count: int


@dataclass(slots=True)
class ChunkedDocument:
    chunks: list[Chunk]
    summary: DocumentSummary


def chunk_document(
    document: PartitionedDocument,
    *,
    max_characters: int = DEFAULT_MAX_CHARACTERS,
    new_after_n_chars: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    overlap_all: bool = False,
    combine_text_under_n_chars: int | None = None,
    multipage_sections: bool = True,
) -> ChunkedDocument:
    """Split `document` at section titles into chunks of at most `max_characters`.

    `overlap` characters of the previous piece prefix each piece of a section that had to
    be split; `overlap_all` also overlaps chunks across section boundaries.
    `combine_text_under_n_chars` merges small sections (default: `max_characters // 4`).
    """
    from unstructured.chunking.title import chunk_by_title

    if combine_text_under_n_chars is None:
        combine_text_under_n_chars = max_characters // 4
    combine_text_under_n_chars = min(combine_text_under_n_chars, max_characters)
    pieces = chunk_by_title(
        document.elements,
        max_characters=max_characters,
        new_after_n_chars=new_after_n_chars or max_characters,
        overlap=overlap,
        overlap_all=overlap_all,
        combine_text_under_n_chars=combine_text_under_n_chars,
        multipage_sections=multipage_sections,
        include_orig_elements=True,
    )
    chunks: list[Chunk] = []
    section_title: str | None = None
    for piece in pieces:
        originals = piece.metadata.orig_elements or [piece]
        titles = [e.text for e in originals if e.category == "Title" and e.text]
        if titles:
            section_title = titles[0]
        pages = sorted({e.metadata.page_number for e in originals if e.metadata.page_number})
        element_types = sorted({e.category for e in originals})
        metadata: dict[str, Any] = {
            "element_types": element_types,
            "section_titles": titles or ([section_title] if section_title else []),
            "pages": pages,
        }
        if piece.category in ("Table", "TableChunk") and piece.metadata.text_as_html:
            metadata["text_as_html"] = piece.metadata.text_as_html
        chunks.append(
            Chunk(
                index=len(chunks),
                text=piece.text,
                title=section_title,
                page=pages[0] if pages else None,
                metadata=metadata,
            )
        )
    return ChunkedDocument(chunks, summarize(document))


def summarize(document: PartitionedDocument) -> DocumentSummary:
    """Page count (paged formats only) and word count of a partitioned document."""
    page_count = document.page_count
    if page_count is None:
        pages = [e.metadata.page_number for e in document.elements if e.metadata.page_number]
        page_count = max(pages) if pages else None
    words = sum(len((e.text or "").split()) for e in document.elements)
    return DocumentSummary(page_count, words, len(document.elements))
