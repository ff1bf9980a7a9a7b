"""Every SQL statement about chunks: replacing a document's chunks, and the two searches.

Vector search orders by `embedding::vector(N) <=> query` under `dimension = N`, the exact
expression and predicate of migration 0005's partial HNSW indexes, so the planner can use
them (N is inlined as a literal: a bound parameter would not match a partial index's
predicate in a generic plan). Keyword search ranks a capped candidate set gathered in
tiers of match strength (`keyword_search`) by `ts_rank` of the OR of the question's lexemes
(in titles, weighted A, first; for an OR query `ts_rank` adds up the words matched, where
`ts_rank_cd`'s cover density does not).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import (
    ColumnElement,
    Delete,
    Float,
    Insert,
    Select,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSQUERY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from pipelines.db.tables import chunks, documents, knowledge_bases

# ts_rank's weights for D, C, B (text), A (section title): a title match counts, but less
# than Postgres' default 2.5x a text match, so one title word does not outrank a passage
# that holds several of the query's words.
_RANK_WEIGHTS = "'{0.1, 0.2, 0.4, 0.6}'::real[]"

# pgvector's HNSW indexes `vector` up to 2000 dimensions; larger ones are indexed as halfvec.
_VECTOR_MAX_DIM = 2000

# Chunks keyword search ranks at most: bounds its cost whatever the words' frequency.
KEYWORD_CANDIDATES = 500


def new_id() -> str:
    return str(uuid.uuid4())


def delete_for_document(document_id: str) -> Delete:
    return delete(chunks).where(chunks.c.document_id == document_id)


def insert_chunks() -> Insert:
    """Executed with a list of rows (executemany): id, document_id, knowledge_id, idx,
    content, title, page, metadata, dimension, embedding."""
    return insert(chunks)


def _typed(dimension: int) -> Any:
    return HALFVEC(dimension) if dimension > _VECTOR_MAX_DIM else Vector(dimension)


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form; cast in SQL, so no driver needs a vector codec."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _result_columns() -> list[Any]:
    return [chunks.c.id, chunks.c.document_id, chunks.c.knowledge_id, chunks.c.idx,
            chunks.c.title, chunks.c.content, chunks.c.page, chunks.c.metadata,
            documents.c.filename, documents.c.file_type,
            documents.c.metadata.label("document_metadata")]


def _any_of(ids: Select) -> Any:
    return func.any(func.array(ids.scalar_subquery()))


def _filters(knowledge_ids: Sequence[str], *, tags: Sequence[str] | None = None,
             document_types: Sequence[str] | None = None,
             document_ids: Sequence[str] | None = None,
             metadata: dict[str, Any] | None = None) -> list[ColumnElement[bool]]:
    """Conditions on `chunks` alone. Base and document filters become `= ANY(ARRAY(SELECT
    ids))`, evaluated once before the scan: as joins, the planner's row estimates for a
    selective filter made it drive the search from the filtered table and sort every
    matching chunk by distance (0.86 s at 100k chunks) instead of walking the HNSW index."""
    bases = cast(list(knowledge_ids), ARRAY(PG_UUID))
    where: list[ColumnElement[bool]] = [chunks.c.knowledge_id == func.any(bases)]
    if tags:
        where.append(chunks.c.knowledge_id == _any_of(
            select(knowledge_bases.c.id).where(
                knowledge_bases.c.id == func.any(bases),
                knowledge_bases.c.tags.overlap(cast(list(tags), ARRAY(Text))))))
    if document_ids:
        where.append(chunks.c.document_id.in_(list(document_ids)))
    if document_types or metadata:
        matching = select(documents.c.id).where(documents.c.knowledge_id == func.any(bases))
        if document_types:
            matching = matching.where(documents.c.file_type.in_(list(document_types)))
        if metadata:
            matching = matching.where(documents.c.metadata.contains(cast(metadata, JSONB)))
        where.append(chunks.c.document_id == _any_of(matching))
    return where


def _with_documents(best: Any, score: Any) -> Select:
    """The result rows of the chunks in subquery `best` (id, score), best first."""
    return (
        select(*_result_columns(), score)
        .select_from(best)
        .join(chunks, chunks.c.id == best.c.id)
        .join(documents, documents.c.id == chunks.c.document_id)
        .order_by(score.desc(), chunks.c.id)
    )


def vector_search(knowledge_ids: Sequence[str], dimension: int, query_vector: Sequence[float],
                  *, limit: int, **filters: Any) -> Select:
    """Nearest chunks by cosine distance among bases whose vectors have `dimension`;
    `score` is the cosine similarity. The nearest ids come from `chunks` alone (the HNSW
    index scan with the filters applied as it walks); documents are joined to those only."""
    kind = _typed(dimension)
    column = cast(chunks.c.embedding, kind)
    # Bound as text and cast in SQL: pgvector's SQLAlchemy type would try to re-encode it.
    query = cast(bindparam("query_vector", vector_literal(query_vector), type_=Text), kind)
    distance = column.cosine_distance(query)
    best = (
        select(chunks.c.id, (1 - distance).label("score"))
        .where(chunks.c.dimension == literal_column(str(int(dimension))),
               *_filters(knowledge_ids, **filters))
        .order_by(distance)
        .limit(limit)
        .subquery("best")
    )
    return _with_documents(best, best.c.score)


def keyword_search(knowledge_ids: Sequence[str], text: str, *, limit: int,
                   candidates: int = KEYWORD_CANDIDATES, **filters: Any) -> Select:
    """The best `limit` of at most `candidates` chunks sharing a lexeme with `text`, by
    `ts_rank` of the OR of its lexemes (normalised to 0..1).

    Candidates are gathered strongest match first, each tier through the GIN index: chunks
    holding every lexeme, then at least two, then any; the UNION ALL stops as soon as
    `candidates` rows are found, so later tiers (the OR of common words can hold most of
    a base) are read only as far as needed, and only those rows are ranked.
    """
    # plainto_tsquery normalises the words (stems, drops stop words) and ANDs them; its text
    # form is `'a' & 'b' & 'c'`, whose operands are quoted tsquery lexemes: split apart and
    # rejoined they give the OR and the "two of them" query of the same lexemes (casting
    # that text back to tsquery does not normalise again).
    anded = func.plainto_tsquery("english", text)
    term = func.unnest(func.string_to_array(cast(anded, Text), " & ")).column_valued("t")
    terms = select(term).distinct().subquery("terms")
    first, second = terms.alias("a"), terms.alias("b")
    pairs = (select(func.string_agg("(" + first.c.t + " & " + second.c.t + ")", " | "))
             .where(first.c.t < second.c.t).scalar_subquery())
    q = select(anded.label("every"), cast(pairs, TSQUERY).label("two"),
               cast(func.replace(cast(anded, Text), " & ", " | "), TSQUERY).label("any")).cte("q")
    tiers = [
        select(chunks.c.id, chunks.c.tsv)
        .select_from(q)
        .join(chunks, chunks.c.tsv.op("@@")(tier))
        .where(*_filters(knowledge_ids, **filters))
        .limit(candidates)
        for tier in (q.c.every, q.c.two, q.c.any)
    ]
    found = union_all(*tiers).limit(candidates).subquery("found")
    rank = func.ts_rank(literal_column(_RANK_WEIGHTS), found.c.tsv, q.c.any, 32).cast(Float)
    best = (select(found.c.id, func.max(rank).label("score"))
            .select_from(found).join(q, true())
            .group_by(found.c.id)
            .order_by(func.max(rank).desc(), found.c.id)
            .limit(limit)
            .subquery("best"))
    return _with_documents(best, best.c.score)
