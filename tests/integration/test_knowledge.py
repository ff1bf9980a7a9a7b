"""Knowledge bases end to end: real files of every type through real uvicorn and dramatiq
processes, the local MiniLM embedder, pgvector search and RAG answers with dev/echo."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import sse_events, wait_status
from tests.integration.knowledge_files import (
    FACTS,
    all_files,
    create_base,
    ingest,
    upload,
    wait_document,
)

MAX_UPLOAD_BYTES = 200_000
NO_ANSWER_START = "I couldn't find anything relevant"


def stored_files(database_url: str, like: str = "%") -> list[tuple[str, int]]:
    """(key, chunk rows) of the files in the default (Postgres) file store."""
    with psycopg.connect(database_url) as conn:
        return [(key, chunks) for key, chunks in conn.execute(
            "SELECT f.key, (SELECT count(*) FROM stored_file_chunks c WHERE c.key = f.key) "
            "FROM stored_files f WHERE f.key LIKE %s ORDER BY f.key", (like,))]


@pytest.fixture(scope="module")
def kstack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
           redis_url: str) -> Iterator[Stack]:
    # The default file store: the bytes live in Postgres, no directory is shared.
    stack = _start_stack(tmp_path_factory.mktemp("knowledge"), database_url, redis_url,
                         env={**RELAXED_LOGIN_ENV, "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(kstack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kstack.base_url, headers=kstack.headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def corpus(http: httpx.Client) -> dict[str, Any]:
    """A base (tag alpha) holding one document of every type, and a second base (tag beta)."""
    base = create_base(http, name="Field manuals", tags=["alpha"], description="all types")
    responses = {}
    for filename, (content, content_type) in all_files().items():
        team = "infra" if filename in ("handbook.pdf", "readme.txt") else "web"
        response = upload(http, base["id"], filename, content, content_type,
                          metadata=f'{{"team": "{team}"}}')
        assert response.status_code == 202, response.text
        responses[filename] = response.json()
    documents = {name: wait_document(http, body["document"]["id"])
                 for name, body in responses.items()}
    other = create_base(http, name="Other", tags=["beta"])
    beta_doc = ingest(http, other["id"], "beta.md",
                      b"# Beta\n\nThe orbital station Kestrel appears in beta notes too.\n")
    return {"base": base, "documents": documents, "jobs": responses, "other": other,
            "beta_doc": beta_doc}


def _search(http: httpx.Client, query: str, base_ids: list[str], mode: str = "hybrid",
            **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/knowledge/search", json={
        "query": query, "knowledge_ids": base_ids, "mode": mode, **extra})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_every_supported_type_is_processed_with_counts_pages_and_word_counts(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    documents = corpus["documents"]
    for name, doc in documents.items():
        assert doc["status"] == "processed", (name, doc["error"])
        assert doc["chunk_count"] >= 1 and doc["progress"] == 1.0
        assert doc["metadata"]["word_count"] > 0 and doc["metadata"]["processing_ms"] > 0
        assert doc["metadata"]["team"] in ("infra", "web")
    assert documents["handbook.pdf"]["metadata"]["pages"] == 3
    assert documents["handbook.pdf"]["file_type"] == "pdf"
    base = http.get(f"/v1/knowledge/{corpus['base']['id']}").json()
    assert base["document_count"] == 7
    assert base["chunk_count"] == sum(d["chunk_count"] for d in documents.values())
    assert base["embedding_dimension"] == 384
    listed = http.get(f"/v1/knowledge/{corpus['base']['id']}/documents").json()
    assert listed["total"] == 7


def test_ingest_job_reports_progress_then_succeeds_with_the_counts(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    job_id = corpus["jobs"]["handbook.pdf"]["job"]["id"]
    events = sse_events(http, job_id)
    stages = [e.data.get("stage") for e in events if e.type == "progress"]
    assert stages[:2] == ["partitioned", "chunked"] and "embedding" in stages
    assert events[-1].type == "succeeded"
    result = events[-1].data["result"]
    assert result["pages"] == 3 and result["chunk_count"] >= 1
    assert set(result["timings_ms"]) == {"partition", "chunk", "embed", "write"}


def test_each_fact_is_found_in_its_own_document_in_every_mode(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    base_id = corpus["base"]["id"]
    for filename, fact in FACTS.items():
        expected = corpus["documents"][filename]["id"]
        for mode in ("vector", "keyword", "hybrid"):
            body = _search(http, fact, [base_id], mode, limit=3)
            assert body["mode"] == mode and body["query_time"] > 0
            assert body["results"], (filename, mode)
            top = body["results"][0]
            assert top["document_id"] == expected, (filename, mode, top["content"][:80])
            assert top["metadata"]["filename"] == filename


def test_search_results_carry_titles_pages_and_both_scores_in_hybrid(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    body = _search(http, "Which station rotates every ninety seconds?", [corpus["base"]["id"]])
    top = body["results"][0]
    assert top["metadata"]["page"] == 2 and top["title"] == "Chapter 2 Operations"
    assert top["vector_score"] > 0.3 and top["keyword_score"] > 0
    docx = _search(http, "How often are invoices batched?", [corpus["base"]["id"]])
    # Small sections are combined into one chunk; every heading it holds is kept.
    assert "Billing" in docx["results"][0]["metadata"]["section_titles"]


def test_search_filters_by_document_type_metadata_and_base_tags(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    bases = [corpus["base"]["id"], corpus["other"]["id"]]
    query = "orbital station Kestrel"
    both = _search(http, query, bases, limit=20)
    assert {r["knowledge_id"] for r in both["results"]} == set(bases)
    beta = _search(http, query, bases, filters={"tags": ["beta"]}, limit=20)
    assert {r["knowledge_id"] for r in beta["results"]} == {corpus["other"]["id"]}
    for mode in ("vector", "keyword", "hybrid"):
        pdf_only = _search(http, query, bases, mode, filters={"document_types": ["pdf"]})
        assert pdf_only["results"]
        assert {r["metadata"]["file_type"] for r in pdf_only["results"]} == {"pdf"}
        web = _search(http, "station", bases, mode, filters={"metadata": {"team": "web"}},
                      limit=50)
        assert web["results"] and all(r["metadata"]["team"] == "web" for r in web["results"])


def test_corrupt_and_empty_files_fail_cleanly_with_a_reason(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    base_id = corpus["base"]["id"]
    corrupt = ingest(http, base_id, "broken.pdf", b"%PDF-1.7\nthis is not really a pdf\n",
                     "application/pdf")
    empty = ingest(http, base_id, "empty.txt", b"", "text/plain")
    assert corrupt["status"] == "failed" and corrupt["error"]["code"] == "CORRUPT_DOCUMENT"
    assert "broken.pdf" in corrupt["error"]["message"]
    assert empty["status"] == "failed" and empty["error"]["code"] == "EMPTY_DOCUMENT"
    assert corrupt["chunk_count"] == 0 and empty["chunk_count"] == 0
    job = wait_status(http, corrupt["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "CORRUPT_DOCUMENT"
    for doc in (corrupt, empty):
        assert http.delete(f"/v1/documents/{doc['id']}").status_code == 204


def test_uploading_the_same_bytes_twice_is_a_conflict_naming_the_first_document(
    http: httpx.Client, corpus: dict[str, Any], database_url: str
) -> None:
    before = stored_files(database_url)
    assert before
    content, content_type = all_files()["readme.txt"]
    response = upload(http, corpus["base"]["id"], "copy-of-readme.txt", content, content_type)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "CONFLICT"
    assert error["details"]["document"]["id"] == corpus["documents"]["readme.txt"]["id"]
    assert stored_files(database_url) == before


def test_upload_limits_types_and_bad_metadata_are_refused(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    base_id = corpus["base"]["id"]
    too_big = upload(http, base_id, "big.txt", b"word " * (MAX_UPLOAD_BYTES // 4), "text/plain")
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    exe = upload(http, base_id, "tool.exe", b"MZ\x90\x00", "application/octet-stream")
    assert exe.status_code == 415 and exe.json()["error"]["code"] == "UNSUPPORTED_FILE_TYPE"
    bad_json = upload(http, base_id, "a.txt", b"alpha", "text/plain", metadata="{nope")
    assert bad_json.status_code == 400
    not_object = upload(http, base_id, "a.txt", b"alpha", "text/plain", metadata="[1, 2]")
    assert not_object.status_code == 422
    not_multipart = http.post(f"/v1/knowledge/{base_id}/documents", json={"file": "x"})
    assert not_multipart.status_code == 415


def test_delete_removes_the_document_its_chunks_and_its_file(
    http: httpx.Client, corpus: dict[str, Any], database_url: str
) -> None:
    base_id = corpus["base"]["id"]
    doc = ingest(http, base_id, "temporary.md",
                 b"# Saffron\n\nThe saffron harvest begins after the first autumn frost.\n")
    assert doc["status"] == "processed"
    assert stored_files(database_url, f"%{doc['id']}%") == [
        (f"documents/{doc['id'][:2]}/{doc['id']}.md", 1)]
    found = _search(http, "saffron harvest frost", [base_id], "keyword")
    assert any(r["document_id"] == doc["id"] for r in found["results"])
    assert http.delete(f"/v1/documents/{doc['id']}").status_code == 204
    assert http.get(f"/v1/documents/{doc['id']}").status_code == 404
    assert stored_files(database_url, f"%{doc['id']}%") == []
    after = _search(http, "saffron harvest frost", [base_id], "keyword")
    assert all(r["document_id"] != doc["id"] for r in after["results"])


def test_reingest_replaces_the_chunks_atomically(http: httpx.Client,
                                                 corpus: dict[str, Any]) -> None:
    doc = corpus["documents"]["notes.md"]
    filters = {"document_ids": [doc["id"]]}
    before = _search(http, "lighthouse", [corpus["base"]["id"]], "keyword", filters=filters)
    response = http.post(f"/v1/documents/{doc['id']}/reingest")
    assert response.status_code == 202, response.text
    assert response.json()["document"]["status"] == "processing"
    again = wait_document(http, doc["id"])
    assert again["status"] == "processed" and again["chunk_count"] == doc["chunk_count"]
    assert again["job_id"] == response.json()["job"]["id"] != doc["job_id"]
    after = _search(http, "lighthouse", [corpus["base"]["id"]], "keyword", filters=filters)
    assert len(after["results"]) == len(before["results"]) >= 1
    assert {r["chunk_id"] for r in after["results"]}.isdisjoint(
        {r["chunk_id"] for r in before["results"]})


def test_ask_answers_with_numbered_sources_whole_and_streamed(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    question = {"question": "How often does the Kestrel station rotate?",
                "knowledge_ids": [corpus["base"]["id"]], "model": "dev/echo",
                "context_limit": 3}
    response = http.post("/v1/knowledge/ask", json=question)
    assert response.status_code == 200, response.text
    body = response.json()
    pdf_id = corpus["documents"]["handbook.pdf"]["id"]
    assert body["sources"][0]["document_id"] == pdf_id, body
    assert body["sources"][0]["index"] == 1
    assert body["sources"][0]["page"] == 2 and len(body["sources"]) <= 3
    # dev/echo repeats the prompt: the numbered sources and the question went to the model.
    assert "[1] (handbook.pdf" in body["answer"] and "ninety seconds" in body["answer"]
    assert body["model"] == "dev/echo" and body["usage"]["total_tokens"] > 0
    frames = []
    with connect_sse(http, "POST", "/v1/knowledge/ask",
                     json={**question, "stream": True}) as source:
        assert source.response.status_code == 200
        frames = [(sse.event, sse.json()) for sse in source.iter_sse()]
    names = [name for name, _ in frames]
    assert names[0] == "sources" and names[-1] == "finish" and "text-delta" in names
    streamed = "".join(data["text"] for name, data in frames if name == "text-delta")
    assert streamed == frames[-1][1]["answer"] == body["answer"]
    assert frames[-1][1]["sources"] == body["sources"]


def test_ask_without_relevant_sources_says_so_without_calling_a_model(
    http: httpx.Client, corpus: dict[str, Any]
) -> None:
    question = {"question": "What do zebras eat during the dry season in Tanzania?",
                "knowledge_ids": [corpus["base"]["id"]], "model": "dev/echo"}
    body = http.post("/v1/knowledge/ask", json=question).json()
    assert body["answer"].startswith(NO_ANSWER_START)
    assert body["sources"] == [] and body["job_id"] is None
    with connect_sse(http, "POST", "/v1/knowledge/ask",
                     json={**question, "stream": True}) as source:
        frames = [(sse.event, sse.json()) for sse in source.iter_sse()]
    assert frames[-1][0] == "finish" and frames[-1][1]["sources"] == []


def test_ask_with_an_unknown_model_is_404(http: httpx.Client, corpus: dict[str, Any]) -> None:
    response = http.post("/v1/knowledge/ask", json={
        "question": "Kestrel?", "knowledge_ids": [corpus["base"]["id"]], "model": "nope/none"})
    assert response.status_code == 404


def test_embeddings_route_speaks_openai_float_and_base64(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={
        "input": ["hello world", "vector search"],
        "model": "sentence-transformers/all-MiniLM-L6-v2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and len(body["data"]) == 2
    assert len(body["data"][0]["embedding"]) == 384 and body["usage"]["prompt_tokens"] > 0
    packed = http.post("/v1/embeddings", json={
        "input": "hello world", "model": "default", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<384f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(body["data"][0]["embedding"], abs=1e-6)
    missing = http.post("/v1/embeddings", json={"input": "x", "model": "no-such-model"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_bases_list_with_tags_search_visibility_and_paging(http: httpx.Client,
                                                          corpus: dict[str, Any]) -> None:
    tagged = http.get("/v1/knowledge", params={"tag": "beta"}).json()
    assert [b["id"] for b in tagged["data"]] == [corpus["other"]["id"]]
    found = http.get("/v1/knowledge", params={"search": "field MAN"}).json()
    assert corpus["base"]["id"] in {b["id"] for b in found["data"]}
    page = http.get("/v1/knowledge", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["total"] >= 2
    patched = http.patch(f"/v1/knowledge/{corpus['other']['id']}",
                         json={"description": "changed", "tags": ["beta", "gamma"]})
    assert patched.status_code == 200 and patched.json()["tags"] == ["beta", "gamma"]
    assert http.get("/v1/knowledge", params={"visibility": "public"}).json()["total"] == 0


@pytest.fixture(scope="module")
def bob(http: httpx.Client, kstack: Stack) -> User:
    return new_user(http, kstack.headers)


def test_other_owners_private_bases_and_documents_are_not_found(
    http: httpx.Client, corpus: dict[str, Any], bob: User
) -> None:
    base_id = corpus["base"]["id"]
    doc_id = corpus["documents"]["notes.md"]["id"]
    as_bob = {"headers": bob.headers}
    assert http.get(f"/v1/knowledge/{base_id}", **as_bob).status_code == 404
    assert http.patch(f"/v1/knowledge/{base_id}", json={"name": "x"}, **as_bob).status_code == 404
    assert http.delete(f"/v1/knowledge/{base_id}", **as_bob).status_code == 404
    assert http.get(f"/v1/knowledge/{base_id}/documents", **as_bob).status_code == 404
    assert upload(http, base_id, "x.txt", b"x", headers=bob.headers).status_code == 404
    assert http.get(f"/v1/documents/{doc_id}", **as_bob).status_code == 404
    assert http.delete(f"/v1/documents/{doc_id}", **as_bob).status_code == 404
    assert http.post(f"/v1/documents/{doc_id}/reingest", **as_bob).status_code == 404
    search = http.post("/v1/knowledge/search", headers=bob.headers, json={
        "query": "Kestrel", "knowledge_ids": [base_id]})
    assert search.status_code == 404
    ask = http.post("/v1/knowledge/ask", headers=bob.headers, json={
        "question": "Kestrel?", "knowledge_ids": [base_id], "model": "dev/echo"})
    assert ask.status_code == 404
    assert base_id not in {b["id"] for b in http.get(
        "/v1/knowledge", params={"owner": "any"}, **as_bob).json()["data"]}
    assert http.get(f"/v1/documents/{doc_id}").status_code == 200


def test_a_public_base_is_readable_and_searchable_but_not_writable_by_others(
    http: httpx.Client, bob: User
) -> None:
    base = create_base(http, name="Shared", visibility="public")
    doc = ingest(http, base["id"], "shared.txt", b"The shared almanac lists tide tables.\n")
    as_bob = {"headers": bob.headers}
    assert http.get(f"/v1/knowledge/{base['id']}", **as_bob).status_code == 200
    assert http.get(f"/v1/documents/{doc['id']}", **as_bob).status_code == 200
    listed = http.get("/v1/knowledge", params={"owner": "any"}, **as_bob).json()
    assert base["id"] in {b["id"] for b in listed["data"]}
    found = http.post("/v1/knowledge/search", headers=bob.headers, json={
        "query": "almanac tide tables", "knowledge_ids": [base["id"]]}).json()
    assert found["results"][0]["document_id"] == doc["id"]
    assert http.delete(f"/v1/documents/{doc['id']}", **as_bob).status_code == 403
    assert upload(http, base["id"], "y.txt", b"y", headers=bob.headers).status_code == 403
    assert http.delete(f"/v1/knowledge/{base['id']}", **as_bob).status_code == 403
    assert http.delete(f"/v1/knowledge/{base['id']}").status_code == 204
    assert http.get(f"/v1/documents/{doc['id']}").status_code == 404
