"""Direct uploads with an S3 store: the client POSTs to a presigned URL of a real moto
server, a worker ingests from the bucket, confirm checks the object again, and the sweeper
deletes expired objects. Its own module, so that no Postgres-store stack (whose sweeper
would delete the same expired rows without touching the bucket) shares its database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import poll
from tests.integration.knowledge_files import create_base, upload, wait_document
from tests.integration.s3server import (
    S3Server,
    s3_server,  # noqa: F401 (fixture)
)
from tests.integration.test_direct_uploads import (
    NOTE,
    STACK_ENV,
    _client,
    _confirm,
    _expire,
    _send,
    _ticket,
    _upload_row,
)


@pytest.fixture(scope="module")
def s3_bucket(s3_server: S3Server) -> str:  # noqa: F811
    return s3_server.new_bucket()


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str,
             s3_server: S3Server, s3_bucket: str) -> Iterator[Stack]:  # noqa: F811
    stack = _start_stack(tmp_path_factory.mktemp("uploads-s3"), database_url, redis_url,
                         env={**STACK_ENV, **s3_server.env(s3_bucket, prefix="sy")})
    yield stack
    stack.stop()


def _objects(s3_server: S3Server, bucket: str) -> list[str]:  # noqa: F811
    listed = s3_server.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_with_an_s3_store_the_client_posts_to_s3_and_a_worker_ingests_from_it(
    s3_stack: Stack, s3_server: S3Server, s3_bucket: str, database_url: str,  # noqa: F811
) -> None:
    with _client(s3_stack) as http:
        base = create_base(http, name="s3 direct")
        ticket = _ticket(http, base["id"])
        assert ticket["store"] == "s3"
        assert ticket["upload_url"].startswith(s3_server.endpoint_url)
        assert ticket["fields"]["key"] == f"sy/{ticket['file_key']}"
        sent = _send(ticket, NOTE)
        assert sent.status_code in (200, 201, 204), sent.text
        confirmed = _confirm(http, base["id"], ticket["file_key"])
        assert confirmed.status_code == 202, confirmed.text
        document = wait_document(http, confirmed.json()["document"]["id"])
        assert document["status"] == "processed", document

        # A multipart upload through the API lands in the bucket too, and a delete removes it.
        response = upload(http, base["id"], "second.md", b"# Dusk\n\nThe horn sounds twice.\n",
                          "text/markdown")
        assert response.status_code == 202, response.text
        second = wait_document(http, response.json()["document"]["id"])
        assert second["status"] == "processed", second
        second_key = f"sy/documents/{second['id'][:2]}/{second['id']}.md"
        assert second_key in _objects(s3_server, s3_bucket)
        assert http.delete(f"/v1/documents/{second['id']}").status_code == 204
        assert second_key not in _objects(s3_server, s3_bucket)
        with psycopg.connect(database_url) as conn:
            # Nothing of an S3 install's files is kept in Postgres.
            assert conn.execute("SELECT count(*) FROM stored_files WHERE key LIKE %s",
                                (f"%{second['id']}%",)).fetchone() == (0,)


def test_with_an_s3_store_size_is_checked_again_at_confirm_and_expired_objects_are_swept(
    s3_stack: Stack, s3_server: S3Server, s3_bucket: str, database_url: str,  # noqa: F811
) -> None:
    with _client(s3_stack) as http:
        base = create_base(http, name="s3 limits")
        ticket = _ticket(http, base["id"], size=10)
        # Whether or not the S3 service enforces the policy's size range, confirm does.
        sent = _send(ticket, NOTE)
        if sent.status_code in (200, 201, 204):
            over = _confirm(http, base["id"], ticket["file_key"])
            assert over.status_code == 413, over.text
        else:
            assert sent.status_code in (400, 403), sent.text
        staged = _ticket(http, base["id"], name="staged.txt")
        assert _send(staged, NOTE).status_code in (200, 201, 204)
        assert f"sy/{staged['file_key']}" in _objects(s3_server, s3_bucket)
        _expire(database_url, staged["upload_id"])
        poll(lambda: _upload_row(database_url, staged["upload_id"]) is None, timeout_s=60,
             what="the sweeper to delete the expired upload")
        assert f"sy/{staged['file_key']}" not in _objects(s3_server, s3_bucket)
