"""The jobs API end to end: submit, read, list and page, idempotency, cancel, retry, and
bad input on every route family — against real uvicorn, dramatiq, Postgres and Redis."""

from __future__ import annotations

import concurrent.futures
import signal
import uuid
from typing import Any

import httpx
import orjson
import pytest
import websockets
from sqlalchemy import create_engine, update
from websockets.sync.client import connect as ws_connect

from api.auth import BOOTSTRAP_USER_ID
from pipelines.db import jobs as jobs_db
from pipelines.db.engine import sync_url
from pipelines.db.tables import jobs as jobs_table
from tests.integration.jobclient import (
    EventLogReader,
    assert_no_server_errors,
    client,
    lorem_input,
    poll,
    submit,
    wait_status,
)

# --- submit and read ---------------------------------------------------------------------


def test_a_noop_job_is_accepted_with_links_and_then_succeeds(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"kind": "noop", "input": {"n": 1}})

    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["kind"] == "noop" and job["attempts"] == 0
    assert job["links"] == {"self": f"/v1/jobs/{job['id']}",
                            "events": f"/v1/jobs/{job['id']}/events"}
    assert response.headers["location"] == job["links"]["self"]
    assert "idempotent-replayed" not in response.headers

    done = wait_status(http, job["id"])
    assert done["status"] == "succeeded"
    assert done["result"] == {"echo": {"n": 1}}
    assert done["attempts"] == 1 and done["progress"] == 1.0
    assert done["started_at"] and done["finished_at"]
    assert http.get(done["links"]["self"]).json() == done


def test_a_chat_job_runs_the_dev_model_and_stores_the_whole_completion(
    http: httpx.Client,
) -> None:
    job = submit(http, "chat", {"model": "dev/echo",
                                "messages": [{"role": "user", "content": "one two three"}]})

    done = wait_status(http, job["id"])

    assert done["status"] == "succeeded", done
    assert done["result"]["content"] == "one two three"
    assert done["result"]["finish_reason"] == "stop"
    assert done["result"]["usage"]["completion_tokens"] == 3


def test_a_chat_job_for_an_unknown_model_is_refused_before_it_is_queued(
    http: httpx.Client,
) -> None:
    response = http.post("/v1/jobs", json={"kind": "chat", "input": {
        "model": "nope/none", "messages": [{"role": "user", "content": "hi"}]}})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MODEL_NOT_FOUND"


# --- list and page -----------------------------------------------------------------------


def test_listing_filters_by_status_and_kind(http: httpx.Client) -> None:
    ok = submit(http, "noop")
    failed = submit(http, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    wait_status(http, ok["id"])
    assert wait_status(http, failed["id"])["status"] == "failed"

    succeeded_noops = _walk(http, {"status": "succeeded", "kind": "noop", "limit": 100})
    failed_chats = _walk(http, {"status": "failed", "kind": "chat", "limit": 100})

    assert ok["id"] in {j["id"] for j in succeeded_noops}
    assert all(j["status"] == "succeeded" and j["kind"] == "noop" for j in succeeded_noops)
    assert failed["id"] in {j["id"] for j in failed_chats}
    assert all(j["status"] == "failed" and j["kind"] == "chat" for j in failed_chats)
    assert failed["id"] not in {j["id"] for j in succeeded_noops}


def test_cursor_paging_walks_every_job_once_newest_first(http: httpx.Client) -> None:
    mine = [submit(http, "noop", {"i": i})["id"] for i in range(7)]

    pages = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"kind": "noop", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= 3
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    seen = [job["id"] for page in pages for job in page]
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert set(mine) <= set(seen), "a job is missing from the pages"
    assert all(len(page) == 3 for page in pages[:-1])
    stamps = [(job["created_at"], job["id"]) for page in pages for job in page]
    assert stamps == sorted(stamps, reverse=True)
    # The newest jobs are ours, so they open the first page, newest first.
    assert seen[:3] == mine[::-1][:3]


def _walk(http: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        body = http.get("/v1/jobs", params=params).json()
        jobs += body["data"]
        if not body["next_cursor"]:
            return jobs
        params = {**params, "cursor": body["next_cursor"]}


# --- idempotency -------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_job_and_says_so(
    http: httpx.Client, log: EventLogReader
) -> None:
    key = f"idem-{uuid.uuid4()}"
    body = {"kind": "noop", "input": {"x": 1}}

    first = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    second = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})

    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    wait_status(http, first.json()["id"])
    assert log.types(first.json()["id"]).count("started") == 1


def test_the_same_idempotency_key_with_a_different_body_is_a_conflict(
    http: httpx.Client,
) -> None:
    key = f"idem-{uuid.uuid4()}"
    assert http.post("/v1/jobs", json={"kind": "noop", "input": {"x": 1}},
                     headers={"Idempotency-Key": key}).status_code == 202

    response = http.post("/v1/jobs", json={"kind": "noop", "input": {"x": 2}},
                         headers={"Idempotency-Key": key})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CONFLICT"


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(stack: Any) -> None:
    key = f"idem-{uuid.uuid4()}"

    def post(_: int) -> httpx.Response:
        with client(stack) as http:
            return http.post("/v1/jobs", json={"kind": "noop", "input": {"race": True}},
                             headers={"Idempotency-Key": key})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1


# --- cancel ------------------------------------------------------------------------------


def test_cancelling_a_running_job_ends_it_and_a_second_cancel_is_a_conflict(
    http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "chat", lorem_input(200, delay_ms=20))
    wait_status(http, job["id"], ["running"])

    response = http.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert log.types(job["id"])[-1] == "cancelled"
    again = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "CONFLICT"


def test_a_job_cancelled_while_queued_is_never_started(
    stack: Any, http: httpx.Client, log: EventLogReader
) -> None:
    stack.kill_workers(signal.SIGTERM)
    job = submit(http, "noop")

    response = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    # A job submitted after it proves the restarted workers have drained the queue.
    marker = submit(http, "noop")
    stack.start_workers()
    wait_status(http, marker["id"])

    assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert "started" not in log.types(job["id"])


def test_cancelling_a_finished_job_is_a_conflict(http: httpx.Client) -> None:
    job = submit(http, "noop")
    wait_status(http, job["id"])

    response = http.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 409
    assert "succeeded" in response.json()["error"]["message"]


# --- retry -------------------------------------------------------------------------------


def test_retrying_a_cancelled_job_queues_it_again_and_it_then_succeeds(
    http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "chat", lorem_input(100, delay_ms=20))
    wait_status(http, job["id"], ["running"])
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200

    response = http.post(f"/v1/jobs/{job['id']}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["error"] is None
    # Quicker the second time round: the input is kept, so change nothing and just wait.
    done = wait_status(http, job["id"], ["succeeded"], timeout_s=15)
    assert done["result"]["usage"]["completion_tokens"] == 100
    assert done["attempts"] == 2
    types = log.types(job["id"])
    assert types.count("started") == 2 and types[-1] == "succeeded"


def test_a_retry_right_after_a_cancel_never_revives_the_cancelled_attempt(
    http: httpx.Client, log: EventLogReader
) -> None:
    # The cancelled attempt sleeps between tokens; the retry lands before it wakes up.
    job = submit(http, "chat", lorem_input(8, delay_ms=150))
    poll(lambda: "delta" in log.types(job["id"]), what="the first token")
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert http.post(f"/v1/jobs/{job['id']}/retry").status_code == 202

    done = wait_status(http, job["id"], timeout_s=15)

    assert done["status"] == "succeeded", done
    events = log.events(job["id"])
    requeued = max(i for i, e in enumerate(events) if e.type == "queued")
    after = events[requeued + 1:]
    assert [e.type for e in after].count("started") == 1
    text = "".join(e.data.get("text", "") for e in after if e.type == "delta")
    assert text == done["result"]["content"] == " ".join(
        "lorem ipsum dolor sit amet consectetur adipiscing elit".split())
    assert [e.type for e in events].count("succeeded") == 1


def test_retrying_a_failed_job_runs_it_again(http: httpx.Client, log: EventLogReader) -> None:
    job = submit(http, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    first = wait_status(http, job["id"])
    assert first["status"] == "failed" and first["error"]["code"] == "UPSTREAM_ERROR"

    response = http.post(f"/v1/jobs/{job['id']}/retry")
    assert response.status_code == 202 and response.json()["status"] == "queued"

    poll(lambda: log.types(job["id"]).count("failed") == 2, what="the second attempt")
    again = wait_status(http, job["id"])
    assert again["status"] == "failed" and again["attempts"] == 2
    assert log.types(job["id"]).count("started") == 2


def test_a_job_whose_stored_input_fails_its_payload_model_fails_once_with_validation_failed(
    http: httpx.Client, log: EventLogReader, database_url: str,
) -> None:
    # A compare job stored before its kind was checked at the edge (an older release let
    # it through), queued again by a retry: the actor scaffold validates the stored input
    # with the payload model and fails the job for good, without a retry.
    job_id = str(uuid.uuid4())
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(*jobs_db.insert_job(job_id=job_id, kind="compare",
                                             owner_id=BOOTSTRAP_USER_ID,
                                             input={"prompt": "hi", "models": ["dev/echo"]}))
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id)
                         .values(status="failed"))
    finally:
        engine.dispose()

    assert http.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    done = wait_status(http, job_id)

    assert done["status"] == "failed", done
    assert done["error"]["code"] == "VALIDATION_FAILED"
    assert done["error"]["message"].startswith("Invalid compare input")
    assert done["attempts"] == 1
    types = log.types(job_id)
    assert types.count("started") == 1 and "retry" not in types
    assert types[-1] == "failed"


def test_retrying_a_succeeded_or_active_job_is_a_conflict(http: httpx.Client) -> None:
    done = submit(http, "noop")
    wait_status(http, done["id"])
    running = submit(http, "chat", lorem_input(100, delay_ms=20))
    wait_status(http, running["id"], ["running"])

    for job in (done, running):
        response = http.post(f"/v1/jobs/{job['id']}/retry")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "CONFLICT"
    http.post(f"/v1/jobs/{running['id']}/cancel")


# --- bad input ---------------------------------------------------------------------------

# Fixed, so that every pytest-xdist worker collects the same test ids.
UNKNOWN = "6f1d0c52-93a4-4b7e-8c1a-0000000000a2"


def _own_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/chat/completions"])
def test_malformed_json_is_a_400(http: httpx.Client, path: str) -> None:
    response = http.post(path, content=b'{"kind": "noop",',
                         headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/chat/completions"])
def test_a_body_that_is_not_json_is_a_415(http: httpx.Client, path: str) -> None:
    response = http.post(path, content=b"kind=noop",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415, response.text


@pytest.mark.parametrize(("body", "field"), [
    ({"input": {}}, "kind"),
    ({"kind": "bogus"}, "kind"),
    ({"kind": "noop", "input": []}, "input"),
    ({"kind": "noop", "priority": 99}, "priority"),
    ({"kind": "noop", "surprise": 1}, "surprise"),
    ({"kind": "chat", "input": {"model": "dev/echo", "messages": []}}, "input.messages"),
    ({"kind": "chat", "input": {"messages": [{"role": "user", "content": "x"}]}}, "input.model"),
    # Every kind is checked with its actor's payload model, not only chat.
    ({"kind": "compare", "input": {"prompt": "x", "models": ["dev/echo"]}}, "input.models"),
    ({"kind": "compare", "input": {"models": ["dev/echo", "dev/lorem"]}}, "input.prompt"),
    ({"kind": "prune", "input": {"keep_last": 2}}, "input.conversation_id"),
])
def test_a_schema_violation_is_a_422_naming_the_field(
    http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    error = _own_error(http.post("/v1/jobs", json=body), 422, "VALIDATION_FAILED")
    assert field in {d["field"] for d in error["details"]}, error


@pytest.mark.parametrize("body", [b"[]", b"null", b"42", b'"x"'])
def test_a_json_body_that_is_not_an_object_is_a_422(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    _own_error(response, 422, "VALIDATION_FAILED")


@pytest.mark.parametrize("body", [
    b'{"kind": "noop", "input": {"text": "nul \\u0000 byte"}}',
    b'{"kind": "noop", "input": {"nul \\u0000 key": 1}}',
    b'{"kind": "noop", "input": {"big": 1e400}}',
    b'{"kind": "noop", "input": {"bad": "\xff\xfe"}}',
    b'{"kind": "noop", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
])
def test_json_postgres_cannot_store_is_refused_with_a_4xx(
    http: httpx.Client, body: bytes
) -> None:
    response = http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in ("INVALID_JSON", "VALIDATION_FAILED")


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "bogus"}, "status"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "%%%"}, "cursor"),
])
def test_bad_list_parameters_are_a_422(
    http: httpx.Client, params: dict[str, str], param: str
) -> None:
    error = _own_error(http.get("/v1/jobs", params=params), 422, "VALIDATION_FAILED")
    assert param in error["message"]


def test_an_overlong_idempotency_key_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"kind": "noop"}, headers={"Idempotency-Key": "k" * 256})
    _own_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.parametrize("job_id", [UNKNOWN, "not-a-uuid", "1", "%00"])
@pytest.mark.parametrize(("method", "suffix"), [
    ("GET", ""), ("POST", "/cancel"), ("POST", "/retry"), ("GET", "/events"),
])
def test_an_unknown_or_malformed_job_id_is_a_404(
    http: httpx.Client, job_id: str, method: str, suffix: str
) -> None:
    response = http.request(method, f"/v1/jobs/{job_id}{suffix}")
    _own_error(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("job_id", [UNKNOWN, "not-a-uuid"])
def test_a_websocket_for_an_unknown_job_is_refused_with_a_404(stack: Any, job_id: str) -> None:
    url = stack.base_url.replace("http", "ws", 1) + f"/v1/jobs/{job_id}/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        with ws_connect(url, additional_headers=stack.headers, open_timeout=5) as ws:
            ws.recv(timeout=5)
    response = info.value.response
    assert response.status_code == 404
    assert orjson.loads(response.body)["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert response.headers["x-request-id"]


def test_an_invalid_last_event_id_is_a_400(http: httpx.Client) -> None:
    job = submit(http, "noop")
    response = http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "garbage"})
    _own_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{UNKNOWN}"),
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/nowhere"),
])
def test_a_missing_or_wrong_key_is_a_401(stack: Any, method: str, path: str) -> None:
    with httpx.Client(base_url=stack.base_url) as anonymous:
        missing = anonymous.request(method, path, json={"kind": "noop"})
        wrong = anonymous.request(method, path, json={"kind": "noop"},
                                  headers={"Authorization": "Bearer sy-wrong"})
        wrong_header = anonymous.request(method, path, json={"kind": "noop"},
                                         headers={"X-API-Key": "sy-wrong"})
    for response in (missing, wrong, wrong_header):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["x-request-id"]
    if path.startswith(("/v1/models", "/v1/chat")):
        assert missing.json()["error"]["type"] == "authentication_error"
        assert missing.json()["error"]["code"] == "invalid_api_key"
    else:
        assert missing.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
        assert wrong.json()["error"]["code"] == "INVALID_CREDENTIALS"


def test_the_admin_key_is_accepted_in_x_api_key(stack: Any) -> None:
    with httpx.Client(base_url=stack.base_url) as anonymous:
        response = anonymous.get("/v1/jobs", headers={"X-API-Key": stack.admin_key})
    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sy-wrong"}])
def test_a_websocket_without_a_valid_key_is_refused_with_a_401(
    stack: Any, headers: dict[str, str]
) -> None:
    url = stack.base_url.replace("http", "ws", 1) + f"/v1/jobs/{UNKNOWN}/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        with ws_connect(url, additional_headers=headers, open_timeout=5) as ws:
            ws.recv(timeout=5)
    assert info.value.response.status_code == 401
    assert orjson.loads(info.value.response.body)["error"]["code"] in (
        "AUTHENTICATION_REQUIRED", "INVALID_CREDENTIALS")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/nowhere", 404), ("GET", "/nowhere", 404), ("DELETE", "/v1/jobs", 405),
])
def test_an_unknown_route_answers_json(
    http: httpx.Client, method: str, path: str, status: int
) -> None:
    response = http.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["message"]
    assert response.headers["x-request-id"]


def test_every_response_carries_a_request_id_and_echoes_the_callers(
    stack: Any, http: httpx.Client
) -> None:
    responses = [
        http.get("/health"), http.get("/ready"), http.get("/openapi.json"),
        http.get("/v1/jobs"), http.get("/v1/models"), http.get("/v1/nowhere"),
        http.post("/v1/jobs", content=b"{"),
    ]
    with httpx.Client(base_url=stack.base_url) as anonymous:
        responses.append(anonymous.get("/v1/jobs"))
    for response in responses:
        assert response.status_code < 500
        assert len(response.headers["x-request-id"]) >= 16, response.request.url
    echoed = http.get("/v1/jobs", headers={"X-Request-ID": "my-trace-123"})
    assert echoed.headers["x-request-id"] == "my-trace-123"
    refused = http.get("/v1/jobs", headers={"X-Request-ID": "bad id\twith spaces"})
    assert refused.headers["x-request-id"] != "bad id\twith spaces"


def test_a_body_over_the_limit_is_a_413_with_or_without_a_content_length(
    start_stack: Any,
) -> None:
    small = start_stack(env={"MAX_JSON_BODY_BYTES": "1024"})
    big = b'{"kind": "noop", "input": {"pad": "' + b"x" * 4096 + b'"}}'
    with client(small) as http:
        for path in ("/v1/jobs", "/v1/chat/completions"):
            declared = http.post(path, content=big, headers={"content-type": "application/json"})
            chunked = http.post(path, content=iter([big[:1000], big[1000:]]),
                                headers={"content-type": "application/json"})
            for response in (declared, chunked):
                assert response.status_code == 413, response.text
                assert response.headers["x-request-id"]
        assert declared.json()["error"]["type"] == "invalid_request_error"
        fits = http.post("/v1/jobs", json={"kind": "noop", "input": {"pad": "x" * 100}})
        assert fits.status_code == 202


def test_nothing_in_this_module_was_answered_with_a_500_or_a_traceback(stack: Any) -> None:
    assert_no_server_errors(stack)
