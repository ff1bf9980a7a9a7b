"""Stored files and direct uploads: their tables (migration 0011_file_store) and every SQL
statement on them.

The tables live here rather than in tables.py because only the file store and the upload
routes touch them; they share tables.py's `metadata`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Insert,
    Integer,
    LargeBinary,
    Select,
    Table,
    Text,
    Update,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import metadata

stored_files = Table(
    "stored_files",
    metadata,
    Column("key", Text, primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("content_type", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Deferred foreign key: the chunks go in first and the `stored_files` row (size and hash,
# known only at the end) last, in one transaction.
stored_file_chunks = Table(
    "stored_file_chunks",
    metadata,
    Column("key", Text, ForeignKey("stored_files.key", ondelete="CASCADE", deferrable=True,
                                   initially="DEFERRED"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# A direct upload: `pending` (URL handed out) -> `uploaded` (bytes received through a
# Switchyard URL; an S3 upload is never seen, so it stays `pending`) -> `confirmed` (a
# document holds the file). Past `expires_at` an unconfirmed one is swept with its bytes.
uploads = Table(
    "uploads",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("knowledge_id", UUID(as_uuid=False),
           ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("file_key", Text, nullable=False, unique=True),
    Column("file_name", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("file_type", Text, nullable=False),
    Column("declared_size", BigInteger, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("size_bytes", BigInteger),
    Column("sha256", Text),
    Column("document_id", UUID(as_uuid=False)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# -- stored files ----------------------------------------------------------------------------

def insert_chunk(key: str, seq: int, data: bytes) -> Insert:
    return insert(stored_file_chunks).values(key=key, seq=seq, data=data)


def insert_file(key: str, *, size_bytes: int, sha256: str, chunk_count: int,
                content_type: str | None) -> Insert:
    return insert(stored_files).values(key=key, size_bytes=size_bytes, sha256=sha256,
                                       chunk_count=chunk_count, content_type=content_type)


def get_file(key: str) -> Select:
    return select(*stored_files.c).where(stored_files.c.key == key)


def read_chunk(key: str, seq: int) -> Select:
    return select(stored_file_chunks.c.data).where(stored_file_chunks.c.key == key,
                                                   stored_file_chunks.c.seq == seq)


def delete_file(key: str) -> ReturningDelete[Any]:
    return delete(stored_files).where(stored_files.c.key == key).returning(stored_files.c.key)


# -- direct uploads ---------------------------------------------------------------------------

def new_upload_id() -> str:
    return str(uuid.uuid4())


def insert_upload(*, upload_id: str, owner_id: str, knowledge_id: str, file_key: str,
                  file_name: str, content_type: str, file_type: str, declared_size: int,
                  expires_at: datetime) -> Insert:
    return insert(uploads).values(
        id=upload_id, owner_id=owner_id, knowledge_id=knowledge_id, file_key=file_key,
        file_name=file_name, content_type=content_type, file_type=file_type,
        declared_size=declared_size, expires_at=expires_at).returning(*uploads.c)


def get_upload(upload_id: str) -> Select:
    return select(*uploads.c).where(uploads.c.id == upload_id)


def upload_by_key(file_key: str, owner_id: str) -> Select:
    return select(*uploads.c).where(uploads.c.file_key == file_key,
                                    uploads.c.owner_id == owner_id)


def receive_upload(upload_id: str) -> Update:
    """Claim a pending, unexpired upload for its one use; the row stays locked until the
    bytes are written and committed, so a second use waits and then matches nothing."""
    return (update(uploads)
            .where(uploads.c.id == upload_id, uploads.c.status == "pending",
                   uploads.c.expires_at > func.now())
            .values(status="uploaded").returning(*uploads.c))


def record_received(upload_id: str, size_bytes: int, sha256: str) -> Update:
    return (update(uploads).where(uploads.c.id == upload_id)
            .values(size_bytes=size_bytes, sha256=sha256))


def confirm_upload(upload_id: str, document_id: str) -> Update:
    """Hand the upload's file to its document; matches nothing once expired or confirmed."""
    return (update(uploads)
            .where(uploads.c.id == upload_id, uploads.c.status != "confirmed",
                   uploads.c.expires_at > func.now())
            .values(status="confirmed", document_id=document_id).returning(uploads.c.id))


def pending_upload_keys_of_base(knowledge_id: str) -> Select:
    """Staged files of a base's unconfirmed uploads (external stores delete them after the
    base is gone; Postgres-stored ones go with the rows)."""
    return select(uploads.c.file_key).where(uploads.c.knowledge_id == knowledge_id,
                                            uploads.c.status != "confirmed")


def delete_expired_uploads(grace_s: float, limit: int) -> ReturningDelete[Any]:
    """Uploads past their expiry by `grace_s`; returns each one's key and status, so the
    caller removes the staged files of the unconfirmed ones from an external store. Rows
    and Postgres-stored bytes go in the same statement (the uploads_delete_file trigger)."""
    expired = (select(uploads.c.id)
               .where(uploads.c.expires_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0,
                                                                              grace_s))
               .order_by(uploads.c.expires_at).limit(limit)
               .with_for_update(skip_locked=True))
    return (delete(uploads).where(uploads.c.id.in_(expired))
            .returning(uploads.c.file_key, uploads.c.status))
