"""Every SQL statement about knowledge bases and their documents.

A base is readable by its owner and, when public, by everyone; it is changed only by its
owner. Statements take the caller's `owner_id` and filter by it, so someone else's private
id finds nothing, exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    and_,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import documents, knowledge_bases, marketplace_entitlements

kb = knowledge_bases


def new_id() -> str:
    return str(uuid.uuid4())


def _counts() -> list[Any]:
    return [
        select(func.count()).where(documents.c.knowledge_id == kb.c.id)
        .scalar_subquery().label("document_count"),
        select(func.coalesce(func.sum(documents.c.chunk_count), 0))
        .where(documents.c.knowledge_id == kb.c.id)
        .scalar_subquery().label("chunk_count"),
    ]


def readable_by(owner_id: str) -> ColumnElement[bool]:
    """Theirs, public, or acquired on the marketplace (an entitlement: read access)."""
    acquired = select(marketplace_entitlements.c.knowledge_id).where(
        marketplace_entitlements.c.user_id == owner_id)
    return or_(kb.c.owner_id == owner_id, kb.c.visibility == "public", kb.c.id.in_(acquired))


# -- knowledge bases -------------------------------------------------------------------------

def insert_base(*, base_id: str, owner_id: str, name: str, description: str | None,
                tags: list[str], visibility: str, embedding_provider: str,
                embedding_model: str, embedding_dimension: int) -> Insert:
    return (
        insert(kb)
        .values(id=base_id, owner_id=owner_id, name=name, description=description, tags=tags,
                visibility=visibility, embedding_provider=embedding_provider,
                embedding_model=embedding_model, embedding_dimension=embedding_dimension)
        .returning(*kb.c, literal(0).label("document_count"), literal(0).label("chunk_count"))
    )


def get_base(base_id: str, owner_id: str) -> Select:
    """The base if the caller may read it (theirs, or public)."""
    return select(*kb.c, *_counts()).where(kb.c.id == base_id, readable_by(owner_id))


def readable_bases(base_ids: Sequence[str], owner_id: str) -> Select:
    """The subset of `base_ids` the caller may read (search and ask check it is all)."""
    return select(*kb.c).where(kb.c.id.in_(list(base_ids)), readable_by(owner_id))


def _list_filter(owner_id: str, *, include_public: bool, tag: str | None, search: str | None,
                 visibility: str | None) -> list[ColumnElement[bool]]:
    where = [readable_by(owner_id) if include_public else kb.c.owner_id == owner_id]
    if tag:
        where.append(kb.c.tags.any(tag))
    if visibility:
        where.append(kb.c.visibility == visibility)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(kb.c.name.ilike(pattern), kb.c.description.ilike(pattern)))
    return where


def list_bases(owner_id: str, *, include_public: bool, tag: str | None, search: str | None,
               visibility: str | None, limit: int, offset: int) -> Select:
    where = _list_filter(owner_id, include_public=include_public, tag=tag, search=search,
                         visibility=visibility)
    return (select(*kb.c, *_counts()).where(*where)
            .order_by(kb.c.created_at.desc(), kb.c.id.desc()).limit(limit).offset(offset))


def count_bases(owner_id: str, *, include_public: bool, tag: str | None, search: str | None,
                visibility: str | None) -> Select:
    where = _list_filter(owner_id, include_public=include_public, tag=tag, search=search,
                         visibility=visibility)
    return select(func.count()).select_from(kb).where(*where)


def update_base(base_id: str, owner_id: str, values: dict[str, Any]) -> Update:
    return (update(kb).where(kb.c.id == base_id, kb.c.owner_id == owner_id)
            .values(**values, updated_at=func.now()).returning(kb.c.id))


def delete_base(base_id: str, owner_id: str) -> ReturningDelete[Any]:
    """Documents and chunks go with it (ON DELETE CASCADE); the caller removes the files."""
    return delete(kb).where(kb.c.id == base_id, kb.c.owner_id == owner_id).returning(kb.c.id)


def storage_keys_of_base(base_id: str) -> Select:
    return select(documents.c.storage_key).where(documents.c.knowledge_id == base_id)


# -- documents -------------------------------------------------------------------------------

def insert_document(*, document_id: str, knowledge_id: str, owner_id: str, filename: str,
                    content_type: str | None, file_type: str, size_bytes: int, sha256: str,
                    storage_key: str, metadata: dict[str, Any], job_id: str) -> Insert:
    """Nothing is inserted (no row returned) when the base already holds these bytes."""
    return (
        insert(documents)
        .values(id=document_id, knowledge_id=knowledge_id, owner_id=owner_id,
                filename=filename, content_type=content_type, file_type=file_type,
                size_bytes=size_bytes, sha256=sha256, storage_key=storage_key,
                metadata=metadata, job_id=job_id)
        .on_conflict_do_nothing(index_elements=["knowledge_id", "sha256"])
        .returning(*documents.c)
    )


def document_by_hash(knowledge_id: str, sha256: str) -> Select:
    return select(*documents.c).where(documents.c.knowledge_id == knowledge_id,
                                      documents.c.sha256 == sha256)


def get_document(document_id: str, owner_id: str) -> Select:
    """The document if the caller may read its base; `base_owner_id` says who may change it."""
    return (
        select(*documents.c, kb.c.owner_id.label("base_owner_id"))
        .join(kb, kb.c.id == documents.c.knowledge_id)
        .where(documents.c.id == document_id, readable_by(owner_id))
    )


def list_documents(knowledge_id: str, *, status: str | None, limit: int, offset: int) -> Select:
    where = [documents.c.knowledge_id == knowledge_id]
    if status:
        where.append(documents.c.status == status)
    return (select(*documents.c).where(*where)
            .order_by(documents.c.created_at.desc(), documents.c.id.desc())
            .limit(limit).offset(offset))


def count_documents(knowledge_id: str, *, status: str | None) -> Select:
    where = [documents.c.knowledge_id == knowledge_id]
    if status:
        where.append(documents.c.status == status)
    return select(func.count()).select_from(documents).where(*where)


def restart_document(document_id: str, owner_id: str, job_id: str) -> Update:
    """Hand the document to a new ingest job (re-ingest); the old job's result won't count."""
    return (
        update(documents)
        .where(documents.c.id == document_id, documents.c.owner_id == owner_id)
        .values(status="processing", progress=0.0, error=None, job_id=job_id,
                updated_at=func.now())
        .returning(*documents.c)
    )


def delete_document(document_id: str, owner_id: str) -> ReturningDelete[Any]:
    """Its chunks go with it (ON DELETE CASCADE); the caller removes the file."""
    return (delete(documents)
            .where(documents.c.id == document_id, documents.c.owner_id == owner_id)
            .returning(documents.c.storage_key, documents.c.job_id, documents.c.status))


# -- the ingest job's view: by the job that owns the document, no owner filter ---------------

def _current(document_id: str, job_id: str) -> ColumnElement[bool]:
    return and_(documents.c.id == document_id, documents.c.job_id == job_id)


def document_for_job(document_id: str, job_id: str) -> Select:
    return select(*documents.c).where(_current(document_id, job_id))


def set_document_status(document_id: str, job_id: str, **values: Any) -> Update:
    """Progress, failure or success of the job that currently owns the document; a
    superseded job's update matches nothing (and returns no row)."""
    return (update(documents).where(_current(document_id, job_id))
            .values(**values, updated_at=func.now()).returning(documents.c.id))


def lock_for_job(document_id: str, job_id: str) -> Select:
    """Row-lock the document while its chunks are replaced, if the job still owns it."""
    return select(documents.c.id).where(_current(document_id, job_id)).with_for_update()
