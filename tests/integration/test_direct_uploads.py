"""Direct uploads end to end, through real uvicorn and dramatiq processes: with the default
Postgres store (Switchyard's own signed, single-use URL) and with an S3 store (a presigned
POST straight to a real moto server). Size and type are enforced when the URL is asked
for and again at confirm; an unconfirmed upload expires and the sweeper deletes it with
its bytes. The S3 half is tests/integration/test_direct_uploads_s3.py (a module of its
own, so that no Postgres-store stack's sweeper shares its database meanwhile)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import poll
from tests.integration.knowledge_files import create_base, wait_document
from tests.integration.s3server import (
    s3_server,  # noqa: F401 (fixture)
)

MAX_UPLOAD_BYTES = 100_000
STACK_ENV = {"MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "EMBEDDING_PROVIDER": "hash",
             # The sweeper runs every second and deletes an upload 10 s after it expires: the
             # test's confirm right after the expiry must find the upload still there (with
             # no grace the sweeper sometimes won that race, and the confirm got a 404).
             "SWEEPER_INTERVAL_S": "1", "UPLOAD_SWEEP_GRACE_S": "10"}
NOTE = b"The lighthouse keeper logs the fog horn at dawn and again at dusk.\n"


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
             redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("uploads-pg"), database_url, redis_url,
                         env=STACK_ENV)
    yield stack
    stack.stop()


def _client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=60)


def _ticket(http: httpx.Client, base_id: str, name: str = "note.txt",
            file_type: str = "text/plain", size: int = len(NOTE)) -> dict[str, Any]:
    response = http.post("/v1/uploads", json={"file_name": name, "file_type": file_type,
                                              "file_size": size, "knowledge_id": base_id})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _send(ticket: dict[str, Any], content: bytes, content_type: str = "text/plain",
          fields: dict[str, str] | None = None) -> httpx.Response:
    """POST the file as a browser would: every field of the ticket, then the file; no API key."""
    return httpx.post(ticket["upload_url"], data=ticket["fields"] if fields is None else fields,
                      files={"file": ("note.txt", content, content_type)}, timeout=60)


def _confirm(http: httpx.Client, base_id: str, file_key: str, **extra: Any) -> httpx.Response:
    return http.post(f"/v1/knowledge/{base_id}/documents/confirm",
                     json={"file_key": file_key, **extra})


def _upload_row(database_url: str, upload_id: str) -> tuple[str, int] | None:
    """(status, stored file rows) of an upload, or None once it is gone."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT u.status, (SELECT count(*) FROM stored_files f WHERE f.key = u.file_key) "
            "FROM uploads u WHERE u.id = %s", (upload_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def _expire(database_url: str, upload_id: str) -> None:
    """Move an upload's expiry into the past (instead of waiting for it)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE uploads SET expires_at = now() - interval '1 second' "
                     "WHERE id = %s", (upload_id,))


def test_a_switchyard_upload_url_is_single_use_and_confirm_ingests_the_file(
    pg_stack: Stack, database_url: str,
) -> None:
    with _client(pg_stack) as http:
        base = create_base(http, name="direct")
        # AI Studio's clients send camelCase.
        response = http.post("/v1/uploads", json={
            "fileName": "note.txt", "fileType": "text/plain", "fileSize": len(NOTE),
            "knowledgeId": base["id"]})
        assert response.status_code == 201, response.text
        ticket = response.json()
        assert ticket["store"] == "postgres"
        assert ticket["upload_url"] == f"{pg_stack.base_url}/uploads/{ticket['upload_id']}"
        assert set(ticket["fields"]) == {"token"}
        assert ticket["max_bytes"] == len(NOTE)

        assert _confirm(http, base["id"], ticket["file_key"]).json()["error"]["code"] == \
            "UPLOAD_INCOMPLETE"
        forged = _send(ticket, NOTE, fields={"token": "0" * 64})
        assert forged.status_code == 403, forged.text
        assert _send(ticket, NOTE).status_code == 204
        assert _upload_row(database_url, ticket["upload_id"]) == ("uploaded", 1)
        again = _send(ticket, NOTE)
        assert again.status_code == 410 and again.json()["error"]["code"] == "UPLOAD_EXPIRED"

        confirmed = _confirm(http, base["id"], ticket["file_key"], metadata={"team": "ops"})
        assert confirmed.status_code == 202, confirmed.text
        body = confirmed.json()
        assert body["job"]["kind"] == "ingest"
        assert body["document"]["filename"] == "note.txt"
        assert body["document"]["size_bytes"] == len(NOTE)
        document = wait_document(http, body["document"]["id"])
        assert document["status"] == "processed", document
        assert document["chunk_count"] >= 1
        found = http.post("/v1/knowledge/search", json={
            "query": "lighthouse fog horn", "knowledge_ids": [base["id"]], "mode": "keyword"})
        assert [r["document_id"] for r in found.json()["results"]] == [document["id"]]
        twice = _confirm(http, base["id"], ticket["file_key"])
        assert twice.status_code == 409
        assert twice.json()["error"]["details"]["document_id"] == document["id"]


def test_size_and_type_are_enforced_when_asking_and_again_when_the_file_arrives(
    pg_stack: Stack, database_url: str,
) -> None:
    with _client(pg_stack) as http:
        base = create_base(http, name="limits")
        too_big = http.post("/v1/uploads", json={
            "file_name": "big.txt", "file_type": "text/plain",
            "file_size": MAX_UPLOAD_BYTES + 1, "knowledge_id": base["id"]})
        assert too_big.status_code == 413, too_big.text
        exe = http.post("/v1/uploads", json={
            "file_name": "tool.exe", "file_type": "application/x-msdownload",
            "file_size": 10, "knowledge_id": base["id"]})
        assert exe.status_code == 415, exe.text
        missing_base = http.post("/v1/uploads", json={
            "file_name": "a.txt", "file_type": "text/plain", "file_size": 10,
            "knowledge_id": "00000000-0000-0000-0000-000000000000"})
        assert missing_base.status_code == 404
        assert http.post("/v1/uploads", json={"file_name": "a.txt"}).status_code == 422

        ticket = _ticket(http, base["id"], size=len(NOTE))
        over = _send(ticket, NOTE + b"one byte more than declared")
        assert over.status_code == 413, over.text
        wrong_type = _send(ticket, NOTE, content_type="application/pdf")
        assert wrong_type.status_code == 415, wrong_type.text
        # Refused sends spend nothing: the URL still takes the right file once.
        assert _upload_row(database_url, ticket["upload_id"]) == ("pending", 0)
        assert _send(ticket, NOTE).status_code == 204
        renamed = _confirm(http, base["id"], ticket["file_key"], file_name="other.txt")
        assert renamed.status_code == 422
        retyped = _confirm(http, base["id"], ticket["file_key"], file_type="application/pdf")
        assert retyped.status_code == 415
        other_base = create_base(http, name="other")
        assert _confirm(http, other_base["id"], ticket["file_key"]).status_code == 404
        assert _confirm(http, base["id"], "uploads/no/such-key.txt").status_code == 404


def test_an_unconfirmed_upload_expires_and_is_swept_with_its_bytes(
    pg_stack: Stack, database_url: str,
) -> None:
    with _client(pg_stack) as http:
        base = create_base(http, name="expiry")
        ticket = _ticket(http, base["id"])
        assert _send(ticket, NOTE).status_code == 204
        kept = _ticket(http, base["id"], name="kept.txt", size=len(NOTE) + 1)
        assert _send(kept, NOTE + b"!").status_code == 204
        assert _confirm(http, base["id"], kept["file_key"]).status_code == 202
        _expire(database_url, ticket["upload_id"])
        _expire(database_url, kept["upload_id"])
        late = _confirm(http, base["id"], ticket["file_key"])
        assert late.status_code == 410 and late.json()["error"]["code"] == "UPLOAD_EXPIRED"
        poll(lambda: _upload_row(database_url, ticket["upload_id"]) is None, timeout_s=60,
             what="the sweeper to delete the expired upload")
        poll(lambda: _upload_row(database_url, kept["upload_id"]) is None, timeout_s=60,
             what="the sweeper to forget the confirmed upload")
        with psycopg.connect(database_url) as conn:
            left = conn.execute("SELECT key FROM stored_files WHERE key IN (%s, %s)",
                                (ticket["file_key"], kept["file_key"])).fetchall()
        # The unconfirmed upload's bytes are gone; the confirmed one's belong to its document.
        assert left == [(kept["file_key"],)]
