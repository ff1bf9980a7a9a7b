"""Where uploaded files live: one interface, three stores, chosen by FILE_STORE_URL.

- `postgres` (the default): the bytes are rows in the application database
  (pipelines/file_store_pg.py), written on the caller's connection, so a document row and
  its file commit or roll back together, and every host that reaches the database reads it.
- `s3://bucket/prefix`: any S3-compatible service (pipelines/file_store_s3.py), for large
  installs; it also hands out presigned POSTs for direct uploads.
- `file:///path`: a directory on this machine, for development only: a worker on another
  host cannot read it, so it is refused outside SWITCHYARD_ENV=development.

The API writes and checks files (async, on its event loop); workers copy a file to a
local temporary path to ingest it (sync, in the ingest thread).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from schemas.settings import Settings

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    size_bytes: int
    # Empty when `describe` found the file over its size limit and did not read it.
    sha256: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class DirectUpload:
    """Where a client sends a file itself: a multipart POST of `fields`, then `file`."""

    url: str
    fields: dict[str, str] = field(default_factory=dict)


class FileStore(Protocol):
    """Durable file storage addressed by key, readable from every host."""

    name: str

    async def save(self, conn: AsyncConnection, key: str, source: BinaryIO, *,
                   content_type: str | None) -> StoredFile:
        """Copy `source` (from its start) under `key` a chunk at a time, hashing as it goes.
        A database store writes on `conn`, inside the caller's transaction."""
        ...

    async def describe(self, conn: AsyncConnection, key: str,
                       max_bytes: int) -> StoredFile | None:
        """Size, hash and content type of a stored file (None if absent). A file over
        `max_bytes` is not read: its `sha256` is empty."""
        ...

    def discard(self, keys: Sequence[str]) -> None:
        """Remove files outside any transaction (after the rows that named them are gone,
        or a failed save). Missing ones are not an error; a database store does nothing,
        since its files go with the rows that own them."""
        ...

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A path on local disk holding the file, valid inside the `with` block."""
        ...

    def direct_upload(self, key: str, *, content_type: str, max_bytes: int,
                      expires_s: int) -> DirectUpload | None:
        """A presigned upload straight to the store, or None when clients upload to
        Switchyard itself."""
        ...


class StoreMisconfigured(ValueError):
    """FILE_STORE_URL names no usable store."""


async def read_block(source: BinaryIO, size: int = CHUNK_BYTES) -> bytes:
    """One block of an upload's spooled file, off the event loop (it may be on disk)."""
    return await asyncio.to_thread(source.read, size)


def hash_file(source: BinaryIO) -> tuple[int, str]:
    """(size, sha256) of `source` from its start, reading a chunk at a time; rewinds it."""
    source.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := source.read(CHUNK_BYTES):
        digest.update(block)
        size += len(block)
    source.seek(0)
    return size, digest.hexdigest()


@contextmanager
def temporary_copy(suffix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A private temporary file (removed on exit) for a worker's copy of a stored file."""
    fd, name = tempfile.mkstemp(prefix="switchyard-file-", suffix=suffix[:16])
    path = Path(name)
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out, path
    finally:
        path.unlink(missing_ok=True)


class LocalFileStore:
    """Files under one directory (development only). Written to a temporary name, then
    renamed into place, so a reader never sees half a file."""

    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return path

    def _write(self, key: str, source: BinaryIO) -> StoredFile:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        source.seek(0)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := source.read(CHUNK_BYTES):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredFile(key=key, size_bytes=size, sha256=digest.hexdigest())

    async def save(self, conn: AsyncConnection, key: str, source: BinaryIO, *,
                   content_type: str | None) -> StoredFile:
        return await asyncio.to_thread(self._write, key, source)

    def _describe(self, key: str, max_bytes: int) -> StoredFile | None:
        path = self._path(key)
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size > max_bytes:
            return StoredFile(key=key, size_bytes=size, sha256="")
        with path.open("rb") as source:
            size, sha256 = hash_file(source)
        return StoredFile(key=key, size_bytes=size, sha256=sha256)

    async def describe(self, conn: AsyncConnection, key: str,
                       max_bytes: int) -> StoredFile | None:
        return await asyncio.to_thread(self._describe, key, max_bytes)

    def discard(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"stored file {key!r} is missing")
        yield path

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        return self.local_path(key)

    def direct_upload(self, key: str, *, content_type: str, max_bytes: int,
                      expires_s: int) -> DirectUpload | None:
        return None


def document_key(document_id: str, filename: str) -> str:
    """Keys spread over 256 prefixes; the extension is kept for people browsing the store."""
    suffix = Path(filename).suffix.lower()[:16]
    return f"documents/{document_id[:2]}/{document_id}{suffix}"


def upload_key(upload_id: str, filename: str) -> str:
    """A direct upload's file keeps this key when it becomes a document."""
    suffix = Path(filename).suffix.lower()[:16]
    return f"uploads/{upload_id[:2]}/{upload_id}{suffix}"


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


def build_file_store(url: str, *, engine: Engine | None = None, development: bool = False,
                     s3: S3Options | None = None) -> FileStore:
    """The store FILE_STORE_URL names. `engine` (sync) lets a Postgres store read files
    back in a worker; the API only writes on its own async connections."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else url.strip().lower()
    if scheme in ("", "postgres", "postgresql", "db", "database"):
        from pipelines.file_store_pg import PostgresFileStore
        return PostgresFileStore(engine)
    if scheme == "s3":
        from pipelines.file_store_s3 import S3FileStore
        return S3FileStore.from_url(url, s3 or S3Options())
    if scheme == "file":
        if not development:
            raise StoreMisconfigured(
                "FILE_STORE_URL=file://... keeps files on one machine's disk, which workers "
                "on other hosts cannot read: use it with SWITCHYARD_ENV=development only "
                "(production: postgres, the default, or s3://bucket/prefix).")
        parts = urlsplit(url)
        path = (parts.netloc + parts.path) if parts.netloc not in ("", "localhost") \
            else parts.path
        if not path:
            raise StoreMisconfigured("FILE_STORE_URL=file:// needs a directory, e.g. "
                                     "file:///var/lib/switchyard/files.")
        return LocalFileStore(path)
    raise StoreMisconfigured(
        f"FILE_STORE_URL {url!r}: use postgres (the default), s3://bucket/prefix, or "
        "file:///dir (development only).")


def file_store_of(settings: Settings, engine: Engine | None = None) -> FileStore:
    """The store the settings name, built at an entry point (the API's lifespan, a worker's
    boot); raises StoreMisconfigured, so a bad FILE_STORE_URL stops the process at start."""
    secret = settings.file_store_secret_access_key
    return build_file_store(
        settings.file_store_url, engine=engine,
        development=settings.environment == "development",
        s3=S3Options(endpoint_url=settings.file_store_endpoint_url,
                     region=settings.file_store_region,
                     access_key_id=settings.file_store_access_key_id,
                     secret_access_key=secret.get_secret_value() if secret else None))
