"""An S3-compatible file store (AWS S3, MinIO, Ceph, moto...): FILE_STORE_URL=s3://bucket/prefix.

Uploads stream to the bucket in parts (boto3's managed transfer: multipart above 8 MiB) and
workers download to a temporary file the same way, so no process holds a whole file.
Objects cannot join a database transaction: an object written for a document whose row
then rolls back (a duplicate, a failure) is removed by the caller with `discard`, and so
are the objects of deleted documents, after the delete commits. Direct uploads get a
presigned POST whose policy pins the key, the content type and the size range.

boto3 is synchronous, so the async methods run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines.storage import (
    CHUNK_BYTES,
    DirectUpload,
    S3Options,
    StoredFile,
    StoreMisconfigured,
    hash_file,
    temporary_copy,
)

# Parts are read sequentially (no transfer threads): the caller already runs us in a
# thread, and the API's thread pool is shared.
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024,
                           multipart_chunksize=8 * 1024 * 1024, use_threads=False)
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3FileStore:
    name = "s3"

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @classmethod
    def from_url(cls, url: str, options: S3Options) -> S3FileStore:
        parts = urlsplit(url)
        if not parts.netloc:
            raise StoreMisconfigured(f"FILE_STORE_URL {url!r} names no bucket "
                                     "(s3://bucket/prefix).")
        client = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint_url, region_name=options.region,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            config=Config(signature_version="s3v4", retries={"max_attempts": 5,
                                                             "mode": "standard"},
                          s3={"addressing_style": "path"} if options.endpoint_url else None))
        return cls(parts.netloc, parts.path, client)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put(self, key: str, source: BinaryIO, content_type: str | None) -> StoredFile:
        # Hash first (a local spooled file), then stream it up: the transfer may read parts
        # out of order, so it cannot be hashed on the way.
        size, sha256 = hash_file(source)
        extra = {"ContentType": content_type} if content_type else {}
        self._client.upload_fileobj(source, self.bucket, self._object(key), ExtraArgs=extra,
                                    Config=_TRANSFER)
        return StoredFile(key=key, size_bytes=size, sha256=sha256, content_type=content_type)

    async def save(self, conn: AsyncConnection, key: str, source: BinaryIO, *,
                   content_type: str | None) -> StoredFile:
        return await asyncio.to_thread(self._put, key, source, content_type)

    def _describe(self, key: str, max_bytes: int) -> StoredFile | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise
        size = int(head["ContentLength"])
        content_type = head.get("ContentType")
        if size > max_bytes:
            return StoredFile(key=key, size_bytes=size, sha256="", content_type=content_type)
        body = self._client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"]
        digest = hashlib.sha256()
        read = 0
        for block in body.iter_chunks(CHUNK_BYTES):
            digest.update(block)
            read += len(block)
            if read > max_bytes:  # replaced since the HEAD: still never over the limit
                return StoredFile(key=key, size_bytes=read, sha256="",
                                  content_type=content_type)
        return StoredFile(key=key, size_bytes=read, sha256=digest.hexdigest(),
                          content_type=content_type)

    async def describe(self, conn: AsyncConnection, key: str,
                       max_bytes: int) -> StoredFile | None:
        return await asyncio.to_thread(self._describe, key, max_bytes)

    def discard(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
            batch = [{"Key": self._object(k)} for k in keys[start:start + 1000]]
            if batch:
                self._client.delete_objects(Bucket=self.bucket,
                                            Delete={"Objects": batch, "Quiet": True})

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with temporary_copy(Path(key).suffix) as (out, path):
            try:
                self._client.download_fileobj(self.bucket, self._object(key), out,
                                              Config=_TRANSFER)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                    raise FileNotFoundError(f"stored file {key!r} is missing") from exc
                raise
            out.flush()
            yield path

    def direct_upload(self, key: str, *, content_type: str, max_bytes: int,
                      expires_s: int) -> DirectUpload | None:
        post = self._client.generate_presigned_post(
            Bucket=self.bucket, Key=self._object(key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type},
                        ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_s)
        return DirectUpload(url=post["url"], fields=dict(post["fields"]))
