"""The grounded-answer prompt: relevance gate, source selection and numbering."""

from __future__ import annotations

from pipelines.answer import (
    SYSTEM_PROMPT,
    build_messages,
    relevant,
    select_sources,
    source_list,
)
from pipelines.retrieve import Hit


def hit(chunk_id: str, content: str = "text", *, vector: float | None = None,
        keyword: float | None = None, page: int | None = None,
        title: str | None = None) -> Hit:
    return Hit(chunk_id=chunk_id, document_id=f"doc-{chunk_id}", knowledge_id="kb",
               title=title, content=content, page=page, score=0.5, filename=f"{chunk_id}.pdf",
               vector_score=vector, keyword_score=keyword)


def test_relevant_keeps_keyword_matches_and_close_vectors_only() -> None:
    hits = [hit("kw", keyword=0.1, vector=0.05), hit("near", vector=0.45),
            hit("far", vector=0.1), hit("none")]
    assert [h.chunk_id for h in relevant(hits, min_similarity=0.3)] == ["kw", "near"]


def test_select_sources_numbers_from_one_and_stops_at_the_limit_or_the_budget() -> None:
    hits = [hit("a", "x" * 40), hit("b", "y" * 40), hit("c", "z" * 40)]
    assert [s.index for s in select_sources(hits, limit=2, max_chars=1000)] == [1, 2]
    assert [s.hit.chunk_id for s in select_sources(hits, limit=5, max_chars=90)] == ["a", "b"]
    # One source always fits, however long.
    assert len(select_sources(hits, limit=5, max_chars=10)) == 1


def test_build_messages_numbers_sources_with_file_section_and_page() -> None:
    sources = select_sources([hit("a", "Kestrel rotates.", page=2, title="Orbit"),
                              hit("b", "Tides are high.")], limit=5, max_chars=1000)
    system, user = build_messages("How fast does Kestrel rotate?", sources, max_chars=1000)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "[n]" not in SYSTEM_PROMPT and "[1]" in SYSTEM_PROMPT
    text = user["content"]
    assert user["role"] == "user"
    assert "[1] (a.pdf, section: Orbit, page 2)\nKestrel rotates." in text
    assert "[2] (b.pdf)\nTides are high." in text
    assert text.index("[1]") < text.index("[2]") < text.index("Question: How fast")


def test_source_list_maps_each_number_to_its_document() -> None:
    sources = select_sources([hit("a", page=3), hit("b")], limit=5, max_chars=1000)
    listed = source_list(sources)
    assert [(s["index"], s["document_id"], s["page"]) for s in listed] == [
        (1, "doc-a", 3), (2, "doc-b", None)]
