"""Grounded answers: which retrieved chunks count as relevant, and the prompt that asks a
model to answer from them, citing `[n]` for source n.

The relevance gate exists so that "nothing found" is said without calling a model, which
would otherwise answer from its own knowledge. RRF scores are ranks, not relevance, so the
gate looks at each hit's own evidence: a shared keyword, or a cosine similarity over a bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.retrieve import Hit

NO_ANSWER = ("I couldn't find anything relevant to this question in the selected knowledge "
             "bases, so I can't answer it from them.")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. Cite the sources you "
    "use with their numbers in square brackets, like [1] or [2][3], right after the claim "
    "they support. If the sources do not contain the answer, say that you don't know "
    "rather than guessing. Do not mention sources that were not provided."
)


@dataclass(frozen=True, slots=True)
class Source:
    """Source `[index]` of a prompt."""

    index: int
    hit: Hit


def relevant(hits: Sequence[Hit], min_similarity: float) -> list[Hit]:
    """Hits with evidence of relevance: a keyword match, or cosine similarity ≥ the bar."""
    return [h for h in hits
            if (h.keyword_score or 0.0) > 0.0
            or (h.vector_score is not None and h.vector_score >= min_similarity)]


def _label(hit: Hit) -> str:
    parts = [hit.filename or "document"]
    if hit.title:
        parts.append(f"section: {hit.title}")
    if hit.page is not None:
        parts.append(f"page {hit.page}")
    return ", ".join(parts)


def select_sources(hits: Sequence[Hit], *, limit: int, max_chars: int) -> list[Source]:
    """The first `limit` hits that fit in `max_chars` of context (at least one, cut short)."""
    sources: list[Source] = []
    used = 0
    for hit in hits[:limit]:
        if sources and used + len(hit.content) > max_chars:
            break
        used += len(hit.content)
        sources.append(Source(len(sources) + 1, hit))
    return sources


def build_messages(question: str, sources: Sequence[Source],
                   max_chars: int) -> list[dict[str, Any]]:
    """Chat messages: the instructions, then one user turn with the sources and the question."""
    blocks = []
    for source in sources:
        content = source.hit.content[:max_chars]
        blocks.append(f"[{source.index}] ({_label(source.hit)})\n{content}")
    user = ("Sources:\n\n" + "\n\n".join(blocks)
            + f"\n\nQuestion: {question}\n\nAnswer using the sources above, citing them as [n].")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def source_list(sources: Sequence[Source]) -> list[dict[str, Any]]:
    """The `sources` of an answer, in citation order."""
    return [{"index": s.index, "chunk_id": s.hit.chunk_id, "document_id": s.hit.document_id,
             "knowledge_id": s.hit.knowledge_id, "filename": s.hit.filename,
             "title": s.hit.title, "page": s.hit.page, "score": s.hit.score}
            for s in sources]
