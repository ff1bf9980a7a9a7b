"""The file stores against real servers: Postgres (the default) and an S3-compatible moto
server process. What every host relies on: a file written by one process is read back
byte for byte by another, a rolled-back write leaves nothing, and deletes are complete."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.db.engine import async_engine, sync_engine
from pipelines.db.files import stored_file_chunks, stored_files
from pipelines.file_store_pg import PostgresFileStore
from pipelines.file_store_s3 import S3FileStore
from pipelines.storage import (
    CHUNK_BYTES,
    LocalFileStore,
    S3Options,
    StoreMisconfigured,
    build_file_store,
)
from tests.integration.s3server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    s3_server,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.anyio

# Two and a half chunks: the last chunk is partial, so off-by-one reads would show.
BIG = os.urandom(CHUNK_BYTES * 2 + CHUNK_BYTES // 2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[AsyncEngine, Engine]]:
    aengine = async_engine(database_url, pool_size=2)
    engine = sync_engine(database_url, pool_size=2)
    yield aengine, engine
    engine.dispose()


def _rows(engine: Engine, key: str) -> tuple[int, int]:
    with engine.connect() as conn:
        files = conn.execute(select(func.count()).select_from(stored_files)
                             .where(stored_files.c.key == key)).scalar_one()
        chunks = conn.execute(select(func.count()).select_from(stored_file_chunks)
                              .where(stored_file_chunks.c.key == key)).scalar_one()
    return files, chunks


async def test_postgres_store_writes_chunks_in_the_callers_transaction_and_reads_them_back(
    engines: tuple[AsyncEngine, Engine],
) -> None:
    aengine, engine = engines
    store = PostgresFileStore(engine)
    key = f"test/{os.urandom(6).hex()}.bin"
    async with aengine.begin() as conn:
        stored = await store.save(conn, key, io.BytesIO(BIG), content_type="application/pdf")
        # Not visible to anyone else before the caller commits.
        assert _rows(engine, key) == (0, 0)
    assert stored.size_bytes == len(BIG)
    assert stored.sha256 == hashlib.sha256(BIG).hexdigest()
    assert _rows(engine, key) == (1, 3)
    async with aengine.connect() as conn:
        described = await store.describe(conn, key, max_bytes=1)
    assert described is not None and described.sha256 == stored.sha256
    assert described.content_type == "application/pdf"
    with store.local_copy(key) as path:
        assert path.read_bytes() == BIG
    assert not path.exists()  # the worker's copy is temporary
    await aengine.dispose()


async def test_postgres_store_leaves_nothing_when_the_transaction_rolls_back(
    engines: tuple[AsyncEngine, Engine],
) -> None:
    aengine, engine = engines
    store = PostgresFileStore(engine)
    key = f"test/{os.urandom(6).hex()}.bin"
    with pytest.raises(RuntimeError, match="duplicate"):
        async with aengine.begin() as conn:
            await store.save(conn, key, io.BytesIO(BIG), content_type=None)
            raise RuntimeError("duplicate document: the route rolls back")
    assert _rows(engine, key) == (0, 0)
    with pytest.raises(FileNotFoundError), store.local_copy(key):
        pass
    await aengine.dispose()


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3FileStore:  # noqa: F811
    bucket = s3_server.new_bucket()
    store = build_file_store(f"s3://{bucket}/tenant-a", s3=S3Options(
        endpoint_url=s3_server.endpoint_url, region=REGION, access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY))
    assert isinstance(store, S3FileStore)
    return store


async def test_s3_store_streams_a_file_up_and_down_under_its_prefix(
    s3_store: S3FileStore, s3_server: S3Server, engines: tuple[AsyncEngine, Engine],  # noqa: F811
) -> None:
    aengine, _ = engines
    big = os.urandom(9 * 1024 * 1024)  # over the 8 MiB multipart threshold
    async with aengine.connect() as conn:
        stored = await s3_store.save(conn, "documents/ab/doc.pdf", io.BytesIO(big),
                                     content_type="application/pdf")
        assert stored.sha256 == hashlib.sha256(big).hexdigest()
        listed = s3_server.client().list_objects_v2(Bucket=s3_store.bucket)  # type: ignore[attr-defined]
        assert [o["Key"] for o in listed["Contents"]] == ["tenant-a/documents/ab/doc.pdf"]
        described = await s3_store.describe(conn, "documents/ab/doc.pdf", len(big))
        assert described is not None
        assert (described.size_bytes, described.sha256, described.content_type) == (
            len(big), stored.sha256, "application/pdf")
        too_big = await s3_store.describe(conn, "documents/ab/doc.pdf", len(big) - 1)
        assert too_big is not None and too_big.size_bytes == len(big) and too_big.sha256 == ""
        with s3_store.local_copy("documents/ab/doc.pdf") as path:
            assert path.read_bytes() == big
        s3_store.discard(["documents/ab/doc.pdf", "documents/never/written.txt"])
        assert await s3_store.describe(conn, "documents/ab/doc.pdf", len(big)) is None
    with pytest.raises(FileNotFoundError), s3_store.local_copy("documents/ab/doc.pdf"):
        pass
    await aengine.dispose()


async def test_s3_presigned_post_pins_the_key_and_content_type(
    s3_store: S3FileStore, engines: tuple[AsyncEngine, Engine],
) -> None:
    aengine, _ = engines
    direct = s3_store.direct_upload("uploads/xy/u1.txt", content_type="text/plain",
                                    max_bytes=1000, expires_s=60)
    assert direct is not None and direct.fields["Content-Type"] == "text/plain"
    posted = httpx.post(direct.url, data=direct.fields,
                        files={"file": ("u1.txt", b"direct bytes", "text/plain")})
    assert posted.status_code in (200, 201, 204), posted.text
    async with aengine.connect() as conn:
        described = await s3_store.describe(conn, "uploads/xy/u1.txt", 1000)
    assert described is not None
    assert described.sha256 == hashlib.sha256(b"direct bytes").hexdigest()
    assert described.content_type == "text/plain"
    await aengine.dispose()


def test_the_local_directory_store_is_for_development_only(tmp_path: Path) -> None:
    with pytest.raises(StoreMisconfigured, match="development"):
        build_file_store(f"file://{tmp_path}")
    assert isinstance(build_file_store(f"file://{tmp_path}", development=True),
                      LocalFileStore)
    assert isinstance(build_file_store("postgres"), PostgresFileStore)
    with pytest.raises(StoreMisconfigured, match="postgres"):
        build_file_store("ftp://files.example/x")
    with pytest.raises(StoreMisconfigured, match="bucket"):
        build_file_store("s3:///no-bucket")
