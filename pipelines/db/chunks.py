"""Every SQL statement about chunks: replacing a document's chunks, and the two searches.

Vector search orders by `embedding::vector(N) <=> query` under `dimension = N`, the exact
expression and predicate of migration 0005's partial HNSW indexes, so the planner can use
them (N is inlined as a literal: a bound parameter would not match a partial index's
predicate in a generic plan). Keyword search ORs the question's lexemes, so a natural
question matches chunks sharing any of its words, and `ts_rank_cd` ranks the ones sharing
more (and in titles, weighted A) first, by `ts_rank` (for an OR query it adds up the words
matched, where `ts_rank_cd`'s cover density does not).
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


def _filters(knowledge_ids: Sequence[str], *, tags: Sequence[str] | None = None,
             document_types: Sequence[str] | None = None,
             document_ids: Sequence[str] | None = None,
             metadata: dict[str, Any] | None = None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        chunks.c.knowledge_id == func.any(cast(list(knowledge_ids), ARRAY(PG_UUID)))]
    if tags:
        where.append(chunks.c.knowledge_id.in_(
            select(knowledge_bases.c.id).where(
                knowledge_bases.c.id == func.any(cast(list(knowledge_ids), ARRAY(PG_UUID))),
                knowledge_bases.c.tags.overlap(cast(list(tags), ARRAY(Text))))))
    if document_types:
        where.append(documents.c.file_type.in_(list(document_types)))
    if document_ids:
        where.append(chunks.c.document_id.in_(list(document_ids)))
    if metadata:
        where.append(documents.c.metadata.contains(cast(metadata, JSONB)))
    return where


def vector_search(knowledge_ids: Sequence[str], dimension: int, query_vector: Sequence[float],
                  *, limit: int, **filters: Any) -> Select:
    """Nearest chunks by cosine distance among bases whose vectors have `dimension`;
    `score` is the cosine similarity."""
    kind = _typed(dimension)
    column = cast(chunks.c.embedding, kind)
    # Bound as text and cast in SQL: pgvector's SQLAlchemy type would try to re-encode it.
    query = cast(bindparam("query_vector", vector_literal(query_vector), type_=Text), kind)
    distance = column.cosine_distance(query)
    return (
        select(*_result_columns(), (1 - distance).label("score"))
        .join(documents, documents.c.id == chunks.c.document_id)
        .where(chunks.c.dimension == literal_column(str(int(dimension))),
               *_filters(knowledge_ids, **filters))
        .order_by(distance)
        .limit(limit)
    )


def keyword_search(knowledge_ids: Sequence[str], text: str, *, limit: int,
                   match_all: bool = False, **filters: Any) -> Select:
    """Chunks sharing any lexeme with `text` (every lexeme, with `match_all`), best
    `ts_rank` first (normalised to 0..1)."""
    # plainto_tsquery normalises the words (stems, drops stop words) and ANDs them; its text
    # form is `'a' & 'b'`, and casting that text back to tsquery does not normalise again,
    # so swapping the operator gives the OR of the same lexemes. Computed once, in a CTE.
    anded = cast(func.plainto_tsquery("english", text), Text)
    tsquery = func.plainto_tsquery("english", text) if match_all else cast(
        func.replace(anded, " & ", " | "), TSQUERY)
    q = select(tsquery.label("q")).cte("q")
    rank = func.ts_rank(literal_column(_RANK_WEIGHTS), chunks.c.tsv, q.c.q, 32).cast(Float)
    return (
        select(*_result_columns(), rank.label("score"))
        .select_from(q)
        .join(chunks, chunks.c.tsv.op("@@")(q.c.q))
        .join(documents, documents.c.id == chunks.c.document_id)
        .where(*_filters(knowledge_ids, **filters))
        .order_by(rank.desc(), chunks.c.id)
        .limit(limit)
    )
