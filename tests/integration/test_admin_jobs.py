"""The operators' jobs API: every owner's jobs, counts and run times, and cancel or retry of
anyone's job — against real uvicorn, dramatiq, Postgres and Redis."""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.accounts import User, new_user
from tests.integration.conftest import Stack, StartStack
from tests.integration.jobclient import client, lorem_input, poll, submit, wait_status


@pytest.fixture
def as_user(stack: Stack) -> Iterator[Callable[..., httpx.Client]]:
    """Factory: a client (of the module's stack, or `on`) that authenticates as `user`."""
    made: list[httpx.Client] = []

    def make(user: User, on: Stack | None = None) -> httpx.Client:
        made.append(httpx.Client(base_url=(on or stack).base_url, headers=user.headers,
                                 timeout=10.0))
        return made[-1]

    yield make
    for http in made:
        http.close()


@pytest.fixture
def alice(http: httpx.Client, stack: Any) -> User:
    return new_user(http, stack.headers)


@pytest.fixture
def bob(http: httpx.Client, stack: Any) -> User:
    return new_user(http, stack.headers)


def _walk(http: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of GET /v1/admin/jobs, following next_cursor."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = http.get("/v1/admin/jobs", params={**params, **({"cursor": cursor}
                                                                    if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        jobs.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


def test_an_admin_sees_every_owners_jobs_with_their_owner(
    http: httpx.Client, alice: User, bob: User
) -> None:
    a = submit(http, "noop", {"who": "alice"}, **alice.headers)
    b = submit(http, "noop", {"who": "bob"}, **bob.headers)

    listed = {job["id"]: job for job in http.get(
        "/v1/admin/jobs", params={"limit": 100}).json()["data"]}

    assert listed[a["id"]]["owner_id"] == alice.id
    assert listed[b["id"]]["owner_id"] == bob.id
    assert listed[a["id"]]["kind"] == "noop"
    assert "input" not in listed[a["id"]]  # listings leave input and result out
    only_bob = _walk(http, {"owner_id": bob.id})
    assert [job["id"] for job in only_bob] == [b["id"]]


def test_admin_listing_pages_newest_first_and_filters_by_status_and_kind(
    http: httpx.Client, alice: User, as_user: Callable[[User], httpx.Client]
) -> None:
    as_alice = as_user(alice)
    ids = [submit(as_alice, "noop", {"n": n})["id"] for n in range(5)]
    failed = submit(as_alice, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    for job_id in [*ids, failed["id"]]:
        wait_status(as_alice, job_id)

    pages = [http.get("/v1/admin/jobs", params={"owner_id": alice.id, "kind": "noop",
                                                 "limit": 2}).json()]
    while pages[-1]["next_cursor"]:
        pages.append(http.get("/v1/admin/jobs", params={
            "owner_id": alice.id, "kind": "noop", "limit": 2,
            "cursor": pages[-1]["next_cursor"]}).json())

    assert [len(page["data"]) for page in pages] == [2, 2, 1]
    assert [job["id"] for page in pages for job in page["data"]] == ids[::-1]
    failures = _walk(http, {"owner_id": alice.id, "status": "failed"})
    assert [job["id"] for job in failures] == [failed["id"]]
    assert failures[0]["error"]["code"] == "UPSTREAM_ERROR"


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "lost"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
])
def test_bad_admin_listing_parameters_are_422(
    http: httpx.Client, params: dict[str, str], param: str
) -> None:
    response = http.get("/v1/admin/jobs", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_FAILED"


def test_a_non_admin_is_refused_every_admin_jobs_route(
    http: httpx.Client, alice: User, bob: User, as_user: Callable[[User], httpx.Client]
) -> None:
    as_bob = as_user(bob)
    job = submit(as_bob, "chat", lorem_input(200, delay_ms=50))

    for method, path in [("GET", "/v1/admin/jobs"), ("GET", "/v1/admin/jobs/stats"),
                         ("POST", f"/v1/admin/jobs/{job['id']}/cancel"),
                         ("POST", f"/v1/admin/jobs/{job['id']}/retry"),
                         ("POST", "/v1/admin/jobs/00000000-0000-0000-0000-000000000000/cancel")]:
        response = http.request(method, path, headers=alice.headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"

    assert as_bob.get(f"/v1/jobs/{job['id']}").json()["status"] in ("queued", "running")
    assert as_bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200


def test_an_admin_cancels_and_then_retries_another_owners_job(
    http: httpx.Client, alice: User, as_user: Callable[[User], httpx.Client]
) -> None:
    as_alice = as_user(alice)
    job = submit(as_alice, "chat", lorem_input(20, delay_ms=100))
    wait_status(as_alice, job["id"], ("running",))

    cancelled = http.post(f"/v1/admin/jobs/{job['id']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["owner_id"] == alice.id
    assert as_alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    again = http.post(f"/v1/admin/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]

    retried = http.post(f"/v1/admin/jobs/{job['id']}/retry")

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    done = wait_status(as_alice, job["id"], ("succeeded",), timeout_s=30)
    assert done["attempts"] == 2
    assert http.post(f"/v1/admin/jobs/{job['id']}/retry").status_code == 409


def test_admin_cancel_or_retry_of_an_unknown_job_is_404(http: httpx.Client) -> None:
    for path in ("/v1/admin/jobs/00000000-0000-0000-0000-000000000000/cancel",
                 "/v1/admin/jobs/not-a-uuid/retry"):
        response = http.post(path)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


def _percentile(values: list[float], fraction: float) -> float:
    """Postgres' percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _succeeded_in_last_hour(http: httpx.Client, now: datetime) -> list[float]:
    runs = []
    for job in _walk(http, {"status": "succeeded", "limit": 100}):
        finished = datetime.fromisoformat(job["finished_at"])
        if finished >= now - timedelta(hours=1):
            runs.append((finished - datetime.fromisoformat(job["started_at"])).total_seconds())
    return runs


def test_stats_count_the_jobs_just_submitted_and_their_run_times(
    stack: Stack, start_stack: StartStack, as_user: Callable[..., httpx.Client]
) -> None:
    # The database is shared by the whole run, and a sweeper would pick up and finish jobs
    # earlier stacks left queued: stop the module's workers (the `stack` fixture restarts
    # them for the next test) and use a stack whose sweeper stays quiet, so the counts move
    # only by the jobs submitted here.
    stack.kill_workers(signal.SIGTERM)
    quiet = start_stack(env={"SWEEPER_INTERVAL_S": "3600"})
    with client(quiet) as http:
        _count_jobs_and_run_times(http, as_user(new_user(http, quiet.headers), quiet))


def _count_jobs_and_run_times(http: httpx.Client, as_alice: httpx.Client) -> None:
    before = http.get("/v1/admin/jobs/stats").json()
    noops = [submit(as_alice, "noop", {"n": n}) for n in range(4)]
    slow = submit(as_alice, "chat", lorem_input(5, delay_ms=40))
    failed = submit(as_alice, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    for job in [*noops, slow, failed]:
        wait_status(as_alice, job["id"])

    after = http.get("/v1/admin/jobs/stats").json()

    def delta(group: str, key: str, field: str) -> int:
        return after[group].get(key, {field: 0})[field] - before[group].get(key, {field: 0})[
            field]

    assert after["window_s"] == 3600
    assert set(after["by_status"]) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert after["overall"]["total"] - before["overall"]["total"] == 6
    assert after["overall"]["last_hour"] - before["overall"]["last_hour"] == 6
    for field in ("total", "last_hour"):
        assert delta("by_status", "succeeded", field) == 5
        assert delta("by_status", "failed", field) == 1
        assert delta("by_kind", "noop", field) == 4
        assert delta("by_kind", "chat", field) == 2
    runs = after["succeeded_run_time"]
    assert runs["count"] - before["succeeded_run_time"]["count"] == 5
    # The same numbers, worked out from the jobs themselves.
    expected = poll(lambda: _succeeded_in_last_hour(http, datetime.now().astimezone()),
                    what="succeeded jobs")
    assert runs["count"] == len(expected)
    assert runs["p50_s"] == pytest.approx(_percentile(expected, 0.5), abs=1e-3)
    assert runs["p95_s"] == pytest.approx(_percentile(expected, 0.95), abs=1e-3)
