"""Where uploaded files live: a small interface, with a local directory behind it.

The API writes the upload here before the ingest job is enqueued, and the worker reads it
back by key, so API and worker processes must share the store (one machine, or a shared
volume). An S3-compatible store would implement the same three methods (`local_path`
downloading to a temporary file); it is not written yet.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    size_bytes: int
    sha256: str


class FileStore(Protocol):
    """Durable file storage addressed by key."""

    def save(self, key: str, source: BinaryIO) -> StoredFile:
        """Copy `source` (from its current position) under `key`, hashing as it goes."""
        ...

    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A path on local disk holding the file, valid inside the `with` block."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file; a missing one is not an error (deletes may be repeated)."""
        ...


class LocalFileStore:
    """Files under one directory; written to a temporary name, then renamed into place, so a
    reader never sees half a file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return path

    def save(self, key: str, source: BinaryIO) -> StoredFile:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := source.read(_COPY_BUFFER):
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

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"stored file {key!r} is missing")
        yield path

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def document_key(document_id: str, filename: str) -> str:
    """Keys spread over 256 directories; the extension is kept for people browsing the store."""
    suffix = Path(filename).suffix.lower()[:16]
    return f"documents/{document_id[:2]}/{document_id}{suffix}"


def build_file_store(directory: str) -> FileStore:
    """The configured store (only the local directory for now)."""
    return LocalFileStore(directory)
