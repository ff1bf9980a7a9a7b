"""One ordinary request cannot cause unbounded work: output tokens are capped per model (and
refused at the edge, in each route's format, before any job exists), the dev models can be
switched off, listings leave the large columns out, and document bombs end `failed` with
DOCUMENT_TOO_LARGE while the worker processes stay as they were."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.integration.conftest import Stack, StartStack
from tests.integration.jobclient import client, submit, wait_status
from tests.integration.knowledge_files import (
    create_base,
    docx_paragraph_bomb,
    ingest,
    pdf_page_tree_bomb,
    wide_csv,
)
from tests.integration.processes import children

DEV_CAP = 4096
OVER = 40_000_000
MESSAGES = [{"role": "user", "content": "one two three"}]
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def newest_job_id(http: httpx.Client) -> str | None:
    data = http.get("/v1/jobs", params={"limit": 1}).json()["data"]
    return data[0]["id"] if data else None


def test_max_tokens_over_the_models_cap_is_refused_in_each_routes_format_and_no_job_exists(
    http: httpx.Client, stack: Stack,
) -> None:
    before = newest_job_id(http)

    openai = http.post("/v1/chat/completions", json={
        "model": "dev/echo", "messages": MESSAGES, "max_tokens": OVER})
    assert openai.status_code == 400, openai.text
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert "4,096" in openai.json()["error"]["message"]
    completion = http.post("/v1/chat/completions", json={
        "model": "dev/echo", "messages": MESSAGES, "max_completion_tokens": OVER,
        "stream": True})
    assert completion.status_code == 400, completion.text

    anthropic = http.post("/v1/messages", json={
        "model": "dev/echo", "messages": MESSAGES, "max_tokens": OVER})
    assert anthropic.status_code == 400, anthropic.text
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "invalid_request_error"

    job = http.post("/v1/jobs", json={"kind": "chat", "input": {
        "model": "dev/echo", "messages": MESSAGES, "max_tokens": OVER}})
    assert job.status_code == 400, job.text
    assert job.json()["error"]["code"] == "VALIDATION_FAILED"
    assert job.json()["error"]["details"] == {"field": "max_tokens", "max": DEV_CAP,
                                              "found": OVER}

    compare = http.post("/v1/compare", json={
        "prompt": "hi", "models": ["dev/echo", "dev/lorem"], "max_tokens": OVER})
    assert compare.status_code == 400, compare.text

    url = stack.base_url.replace("http", "ws", 1) + "/v1/ws/chat"
    with connect(url, additional_headers=stack.headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "start", "model": "dev/echo", "messages": MESSAGES,
                                "max_tokens": OVER}))
        frame = json.loads(socket.recv(timeout=15))
    assert frame["type"] == "error" and frame["code"] == "VALIDATION_FAILED"

    assert newest_job_id(http) == before
    at_cap = submit(http, "chat", {"model": "dev/echo", "messages": MESSAGES,
                                   "max_tokens": DEV_CAP})
    assert wait_status(http, at_cap["id"])["status"] == "succeeded"


def test_an_admin_sets_a_models_output_cap_and_clears_it(http: httpx.Client) -> None:
    model_id = f"capped-echo-{uuid.uuid4().hex[:8]}"
    created = http.post("/v1/admin/models", json={
        "id": model_id, "provider": "dev", "upstream_model": "echo", "max_output_tokens": 5})
    assert created.status_code == 201, created.text
    assert created.json()["max_output_tokens"] == 5
    assert http.get(f"/v1/models/{model_id}").json()["max_output_tokens"] == 5

    def chat(max_tokens: int) -> httpx.Response:
        return http.post("/v1/chat/completions", json={
            "model": model_id, "messages": MESSAGES, "max_tokens": max_tokens})

    assert chat(6).status_code == 400
    assert chat(5).status_code == 200

    cleared = http.put(f"/v1/admin/models/{model_id}", json={"max_output_tokens": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["max_output_tokens"] is None
    assert chat(6).status_code == 200


def test_dev_models_switched_off_are_not_listed_and_not_found_in_each_format(
    start_stack: StartStack,
) -> None:
    stack = start_stack(env={"DEV_MODELS_ENABLED": "false"})
    with client(stack) as http:
        listed = [model["id"] for model in http.get("/v1/models").json()["data"]]
        assert not [model_id for model_id in listed if model_id.startswith("dev/")]
        assert http.get("/v1/models/dev/echo").status_code == 404

        openai = http.post("/v1/chat/completions", json={"model": "dev/echo",
                                                         "messages": MESSAGES})
        assert openai.status_code == 404, openai.text
        assert openai.json()["error"]["code"] == "model_not_found"

        anthropic = http.post("/v1/messages", json={"model": "dev/echo", "messages": MESSAGES,
                                                    "max_tokens": 10})
        assert anthropic.status_code == 404, anthropic.text
        assert anthropic.json()["error"]["type"] == "not_found_error"

        job = http.post("/v1/jobs", json={"kind": "chat", "input": {
            "model": "dev/lorem", "messages": MESSAGES}})
        assert job.status_code == 404, job.text
        assert job.json()["error"]["code"] == "MODEL_NOT_FOUND"


def test_job_listings_leave_out_input_and_result_which_the_job_itself_has(
    http: httpx.Client,
) -> None:
    blob = {"blob": "x" * 1_000_000}
    job = submit(http, "noop", blob)
    assert wait_status(http, job["id"])["status"] == "succeeded"

    for path in ("/v1/jobs", "/v1/admin/jobs"):
        listed = {item["id"]: item for item in http.get(path, params={"limit": 5}).json()["data"]}
        assert job["id"] in listed
        assert not {"input", "result"} & set(listed[job["id"]]), path
        assert listed[job["id"]]["status"] == "succeeded"

    whole = http.get(f"/v1/jobs/{job['id']}").json()
    assert whole["input"] == blob
    assert whole["result"] == {"echo": blob}


def worker_memory(stack: Stack) -> dict[int, int]:
    """Resident bytes of each worker process under the stack's worker supervisor, without
    the document readers (forked from multiprocessing's fork server, which they name)."""
    assert stack.workers is not None
    found: dict[int, int] = {}
    pending = [stack.workers.pid]
    while pending:
        for pid, cmdline in children(pending.pop()).items():
            if "forkserver" in cmdline:
                continue
            pending.append(pid)
            status = Path(f"/proc/{pid}/status").read_text()
            kb = next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS:"))
            found[pid] = int(kb) * 1024
    return found


def test_document_bombs_fail_as_too_large_and_the_workers_stay_as_they_were(
    http: httpx.Client, stack: Stack,
) -> None:
    base_id = create_base(http, name="bombs")["id"]
    warm = ingest(http, base_id, "warm.md", b"# Warm\n\nA reader starts for this one.\n",
                  "text/markdown")
    assert warm["status"] == "processed", warm
    before = worker_memory(stack)

    bombs: list[tuple[str, bytes, str, str]] = [
        ("pages.pdf", pdf_page_tree_bomb(), "application/pdf", "pages"),
        ("paragraphs.docx", docx_paragraph_bomb(), DOCX, "paragraphs"),
        ("columns.csv", wide_csv(), "text/csv", "columns"),
    ]
    for filename, content, content_type, limit in bombs:
        document: dict[str, Any] = ingest(http, base_id, filename, content, content_type)
        assert document["status"] == "failed", document
        assert document["error"]["code"] == "DOCUMENT_TOO_LARGE", document
        assert document["chunk_count"] == 0
        job = wait_status(http, document["job_id"])
        assert job["status"] == "failed"
        assert job["error"]["code"] == "DOCUMENT_TOO_LARGE"
        assert limit in job["error"]["message"]

    after = worker_memory(stack)
    assert set(after) == set(before)
    for pid, resident in after.items():
        assert resident - before[pid] < 100 * 1024 * 1024, (pid, before[pid], resident)


def test_a_corrupt_pdf_fails_with_a_code_and_a_plain_message(http: httpx.Client) -> None:
    base_id = create_base(http, name="corrupt")["id"]

    document = ingest(http, base_id, "broken.pdf", b"%PDF-1.7\nthis is not really a pdf\n",
                      "application/pdf")

    assert document["status"] == "failed"
    assert document["error"] == {"code": "CORRUPT_DOCUMENT",
                                 "message": "'broken.pdf' could not be read as a PDF."}
    job = wait_status(http, document["job_id"])
    assert job["error"]["message"] == "'broken.pdf' could not be read as a PDF."
