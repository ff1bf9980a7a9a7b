"""The default file store: a file's bytes as rows of the application database.

A file is `stored_files` (key, size, hash) plus `stored_file_chunks` of at most 1 MiB each
(pipelines/db/files.py). `save` writes them on the caller's connection, inside its
transaction, one chunk per statement, so the document row and its bytes commit together
(and a rolled-back upload leaves nothing) while memory holds one chunk, never the file.
Workers read a file back one chunk per query into a temporary file. Deleting a document
row deletes its file in the same transaction (a trigger, migration 0011_file_store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines.db import files as files_db
from pipelines.storage import CHUNK_BYTES, DirectUpload, StoredFile, read_block, temporary_copy


class PostgresFileStore:
    name = "postgres"

    def __init__(self, engine: Engine | None = None) -> None:
        # Sync engine for reading files back (workers); None in the API, which only writes.
        self._engine = engine

    async def save(self, conn: AsyncConnection, key: str, source: BinaryIO, *,
                   content_type: str | None) -> StoredFile:
        source.seek(0)
        digest = hashlib.sha256()
        size = 0
        seq = 0
        while block := await read_block(source, CHUNK_BYTES):
            digest.update(block)
            size += len(block)
            await conn.execute(files_db.insert_chunk(key, seq, block))
            seq += 1
        sha256 = digest.hexdigest()
        await conn.execute(files_db.insert_file(key, size_bytes=size, sha256=sha256,
                                                chunk_count=seq, content_type=content_type))
        return StoredFile(key=key, size_bytes=size, sha256=sha256, content_type=content_type)

    async def describe(self, conn: AsyncConnection, key: str,
                       max_bytes: int) -> StoredFile | None:
        row = (await conn.execute(files_db.get_file(key))).first()
        if row is None:
            return None
        return StoredFile(key=key, size_bytes=row.size_bytes, sha256=row.sha256,
                          content_type=row.content_type)

    def discard(self, keys: Sequence[str]) -> None:
        """Nothing to do: a file's rows go with the transaction or row that owns them."""

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        if self._engine is None:
            raise RuntimeError("PostgresFileStore was built without an engine to read with")
        with temporary_copy(Path(key).suffix) as (out, path), self._engine.connect() as conn:
            # One snapshot for every chunk: a file deleted mid-read is still read whole.
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(files_db.get_file(key)).first()
            if row is None:
                raise FileNotFoundError(f"stored file {key!r} is missing")
            for seq in range(row.chunk_count):
                out.write(conn.execute(files_db.read_chunk(key, seq)).scalar_one())
            out.flush()
            conn.rollback()
            yield path

    def direct_upload(self, key: str, *, content_type: str, max_bytes: int,
                      expires_s: int) -> DirectUpload | None:
        return None
