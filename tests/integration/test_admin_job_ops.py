"""Operators' job search, failure groups, bulk retry and cancel, and one job in full —
against real uvicorn, worker processes, Postgres and Redis (dev models)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.accounts import User, new_user
from tests.integration.conftest import Stack
from tests.integration.jobclient import lorem_input, submit, wait_status


@pytest.fixture
def alice(http: httpx.Client, stack: Stack) -> User:
    return new_user(http, stack.headers)


@pytest.fixture
def as_alice(stack: Stack, alice: User) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers=alice.headers, timeout=10.0) as client:
        yield client


def _failing(tokens: int) -> dict[str, Any]:
    return lorem_input(5, dev_options={"fail_after_tokens": tokens})


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


def test_the_listing_filters_by_model_queue_error_text_and_time_range(
    http: httpx.Client, alice: User, as_alice: httpx.Client,
) -> None:
    echo = submit(as_alice, "chat", {"model": "dev/echo",
                                     "messages": [{"role": "user", "content": "hi"}]})
    failed = submit(as_alice, "chat", _failing(2))
    noop = submit(as_alice, "noop", {"n": 1})
    for job in (echo, failed, noop):
        wait_status(as_alice, job["id"])
    mine = {"owner_id": alice.id}

    assert _ids(http.get("/v1/admin/jobs", params={**mine, "model": "dev/echo"})) == [echo["id"]]
    assert _ids(http.get("/v1/admin/jobs", params={**mine, "queue": "default"})) == [noop["id"]]
    assert set(_ids(http.get("/v1/admin/jobs", params={**mine, "queue": "chat"}))) == {
        echo["id"], failed["id"]}
    assert _ids(http.get("/v1/admin/jobs", params={**mine, "error": "AFTER 2 TOK"})) == [
        failed["id"]]
    assert _ids(http.get("/v1/admin/jobs", params={**mine, "error": "50%_"})) == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert _ids(http.get("/v1/admin/jobs", params={**mine, "created_from": future})) == []
    assert len(_ids(http.get("/v1/admin/jobs", params={**mine, "created_to": future}))) == 3
    # A kind that is not sent to the queue asked for: nothing, rather than either filter.
    assert _ids(http.get("/v1/admin/jobs", params={**mine, "kind": "noop",
                                                    "queue": "chat"})) == []


@pytest.mark.parametrize("params", [
    {"status": "lost"}, {"created_from": "yesterday"}, {"error": "a\x00b"},
    {"limit": "0"},
])
def test_bad_filters_are_422(http: httpx.Client, params: dict[str, str]) -> None:
    for path in ("/v1/admin/jobs", "/v1/admin/jobs/failures"):
        response = http.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_FAILED"


def test_failures_group_by_code_and_signature_and_bulk_retry_confirms_a_count_first(
    http: httpx.Client, alice: User, as_alice: httpx.Client,
) -> None:
    failed = [submit(as_alice, "chat", _failing(n)) for n in (1, 2, 3)]
    for job in failed:
        wait_status(as_alice, job["id"])

    groups = http.get("/v1/admin/jobs/failures", params={"owner_id": alice.id}).json()["data"]
    assert len(groups) == 1
    group = groups[0]
    assert group["count"] == 3 and group["code"] == "UPSTREAM_ERROR"
    assert group["kinds"] == ["chat"]
    assert "#" in group["signature"] and "after" in group["example"]

    selection = {"owner_id": alice.id, "code": group["code"],
                 "signature": group["signature"]}
    dry = http.post("/v1/admin/jobs/bulk", json={"action": "retry", "filter": selection,
                                                  "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["matched"] == 3 and dry.json()["changed"] == 0
    assert all(as_alice.get(f"/v1/jobs/{j['id']}").json()["attempts"] == 1 for j in failed)

    done = http.post("/v1/admin/jobs/bulk", json={"action": "retry", "filter": selection})
    assert done.status_code == 200, done.text
    assert done.json()["changed"] == 3
    assert sorted(done.json()["job_ids"]) == sorted(j["id"] for j in failed)
    for job in failed:
        assert wait_status(as_alice, job["id"], statuses=("failed",))["attempts"] == 2

    detail = http.get(f"/v1/admin/jobs/{failed[0]['id']}")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["job"]["owner_id"] == alice.id and body["job"]["input"]["model"] == "dev/lorem"
    assert [(a["attempt"], a["outcome"]) for a in body["attempts"]] == [
        (1, "failed"), (2, "failed")]
    assert body["events"][0]["type"] == "queued" and body["events"][-1]["type"] == "failed"


def test_bulk_cancel_takes_only_queued_or_running_jobs(
    http: httpx.Client, alice: User, as_alice: httpx.Client,
) -> None:
    slow = [submit(as_alice, "chat", lorem_input(500, delay_ms=50)) for _ in range(2)]
    finished = submit(as_alice, "noop", {"n": 2})
    wait_status(as_alice, finished["id"])

    response = http.post("/v1/admin/jobs/bulk", json={
        "action": "cancel", "filter": {"owner_id": alice.id}})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["job_ids"]) == sorted(j["id"] for j in slow)
    for job in slow:
        assert wait_status(as_alice, job["id"])["status"] == "cancelled"
    assert as_alice.get(f"/v1/jobs/{finished['id']}").json()["status"] == "succeeded"


def test_an_operator_replays_any_owners_job_events_over_sse(
    http: httpx.Client, as_alice: httpx.Client,
) -> None:
    job = submit(as_alice, "noop", {"n": 3})
    wait_status(as_alice, job["id"])
    types = []
    with http.stream("GET", f"/v1/admin/jobs/{job['id']}/events") as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event:"):
                types.append(line.split(":", 1)[1].strip())
                if types[-1] == "succeeded":
                    break
    assert types == ["queued", "started", "succeeded"]


def test_non_admins_are_refused_and_bad_bulk_bodies_are_422(
    http: httpx.Client, alice: User,
) -> None:
    for method, path in (("GET", "/v1/admin/jobs/failures"), ("POST", "/v1/admin/jobs/bulk"),
                         ("GET", "/v1/admin/jobs/00000000-0000-0000-0000-000000000000"),
                         ("GET", "/v1/admin/jobs/00000000-0000-0000-0000-000000000000/events")):
        response = http.request(method, path, headers=alice.headers, json={})
        assert response.status_code == 403, (path, response.text)
    for body in ({"action": "explode"}, {"action": "retry", "filter": {"nope": 1}},
                 {"action": "retry", "limit": 100000}):
        response = http.post("/v1/admin/jobs/bulk", json=body)
        assert response.status_code == 422, response.text
    missing = http.get("/v1/admin/jobs/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
