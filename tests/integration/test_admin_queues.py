"""Operators' queues: depths, pause (jobs stay queued while workers serve other queues),
resume, and purging dead letters — real uvicorn, worker processes, Postgres and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.accounts import new_user
from tests.integration.conftest import Stack
from tests.integration.jobclient import submit, wait_status


@pytest.fixture
def resumed(http: httpx.Client) -> Iterator[None]:
    """Whatever a test pauses is resumed after it, so the module's stack keeps serving."""
    yield
    for queue in ("default", "chat"):
        http.post(f"/v1/admin/queues/{queue}/resume")


def _queue(http: httpx.Client, name: str) -> dict[str, object]:
    response = http.get("/v1/admin/queues")
    assert response.status_code == 200, response.text
    return next(q for q in response.json()["data"] if q["name"] == name)


def test_a_paused_queue_keeps_its_jobs_queued_until_resumed(
    http: httpx.Client, resumed: None,
) -> None:
    paused = http.post("/v1/admin/queues/default/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    waiting = submit(http, "noop", {"n": "paused"})
    # Workers still serve the other queues: a chat job finishes meanwhile...
    chat = submit(http, "chat", {"model": "dev/echo",
                                 "messages": [{"role": "user", "content": "still here"}]})
    assert wait_status(http, chat["id"])["status"] == "succeeded"
    # ... while the paused queue's job has not been taken.
    assert http.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
    state = _queue(http, "default")
    assert state["paused"] is True and int(state["queued"]) >= 1  # type: ignore[call-overload]

    resumed_state = http.post("/v1/admin/queues/default/resume")
    assert resumed_state.status_code == 200 and resumed_state.json()["paused"] is False
    assert wait_status(http, waiting["id"])["status"] == "succeeded"
    assert _queue(http, "default")["paused"] is False


def test_dead_letters_are_counted_and_purged(
    http: httpx.Client, stack: Stack, redis_url: str,
) -> None:
    import redis

    dead = f"{stack.namespace}:dq:chat.XQ"
    with redis.Redis.from_url(redis_url) as client:
        client.zadd(dead, {"m1": 1, "m2": 2})
        client.hset(f"{dead}.msgs", mapping={"m1": b"x", "m2": b"y"})
    assert _queue(http, "chat")["dead_letters"] == 2
    purged = http.post("/v1/admin/queues/chat/dead-letters/purge")
    assert purged.status_code == 200 and purged.json() == {"queue": "chat", "purged": 2}
    assert _queue(http, "chat")["dead_letters"] == 0


def test_unknown_queues_are_404_and_non_admins_403(http: httpx.Client, stack: Stack) -> None:
    assert http.post("/v1/admin/queues/nope/pause").status_code == 404
    user = new_user(http, stack.headers)
    for method, path in (("GET", "/v1/admin/queues"), ("POST", "/v1/admin/queues/chat/pause"),
                         ("POST", "/v1/admin/queues/chat/resume"),
                         ("POST", "/v1/admin/queues/chat/dead-letters/purge")):
        response = http.request(method, path, headers=user.headers)
        assert response.status_code == 403, (path, response.text)


def test_every_operator_action_is_in_the_audit_log_newest_first(
    http: httpx.Client, stack: Stack, resumed: None,
) -> None:
    assert http.post("/v1/admin/queues/chat/pause").status_code == 200
    assert http.post("/v1/admin/queues/chat/resume").status_code == 200
    job = submit(http, "chat", {"model": "dev/lorem", "max_tokens": 3,
                                "messages": [{"role": "user", "content": "x"}],
                                "dev_options": {"fail_after_tokens": 1}})
    wait_status(http, job["id"])
    assert http.post(f"/v1/admin/jobs/{job['id']}/retry").status_code == 202
    wait_status(http, job["id"], statuses=("failed",))

    first = http.get("/v1/admin/audit", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["action"] for e in page["data"]] == ["job.retry", "queue.resume"]
    assert page["data"][0]["target"] == job["id"] and page["data"][0]["actor"].startswith("admin")
    older = http.get("/v1/admin/audit", params={"limit": 1, "cursor": page["next_cursor"]})
    assert older.json()["data"][0]["action"] == "queue.pause"
    assert older.json()["data"][0]["target"] == "chat"
    assert http.get("/v1/admin/audit", params={"cursor": "nope"}).status_code == 422
    user = new_user(http, stack.headers)
    assert http.get("/v1/admin/audit", headers=user.headers).status_code == 403
