"""The dashboard's live feed (`GET /v1/admin/live`), its tickets, the per-minute queue history
and model traffic, against the real stack."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, connect_sse

from tests.integration.accounts import login, new_user
from tests.integration.jobclient import client, poll, submit, wait_status

LIVE = "/v1/admin/live"
READ_ROUTES = [("GET", LIVE), ("POST", "/v1/admin/live/tickets"),
               ("GET", "/v1/admin/queues/history"), ("GET", "/v1/admin/model-traffic")]


@pytest.fixture
def http(stack: Any) -> Iterator[httpx.Client]:
    with client(stack) as http:
        yield http


def _events(source: EventSource) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, type, data) of each frame; every frame is typed and has an id."""
    for sse in source.iter_sse():
        assert sse.id, f"frame without id: {sse}"
        assert sse.event and sse.event != "message", f"untyped frame: {sse}"
        data = sse.json()
        assert data["type"] == sse.event
        yield sse.id, sse.event, data


def _until(events: Iterator[tuple[str, str, dict[str, Any]]],
           found: Callable[[str, dict[str, Any]], bool], what: str,
           timeout_s: float = 20.0) -> dict[str, Any]:
    """The first event `found` accepts. The feed sends `workers` every second, so the
    deadline is checked at least that often."""
    deadline = time.monotonic() + timeout_s
    for _, type_, data in events:
        if found(type_, data):
            return data
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no {what} within {timeout_s}s")


def _until_all(events: Iterator[tuple[str, str, dict[str, Any]]],
               wanted: dict[str, Callable[[str, dict[str, Any]], bool]],
               timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Each wanted event (by name), in whatever order they come."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    for _, type_, data in events:
        for name, found in wanted.items():
            if name not in seen and found(type_, data):
                seen[name] = data
        if len(seen) == len(wanted) or time.monotonic() > deadline:
            break
    assert set(seen) == set(wanted), f"missing within {timeout_s}s: {set(wanted) - set(seen)}"
    return seen


def _queue(queues: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(q for q in queues if q["name"] == name)


def test_the_feed_sends_a_snapshot_then_queue_and_job_changes(
    stack: Any, http: httpx.Client
) -> None:
    assert http.post("/v1/admin/queues/default/pause").status_code == 200
    try:
        with connect_sse(http, "GET", LIVE, timeout=httpx.Timeout(20.0)) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers["cache-control"] == "no-cache"
            events = _events(source)
            first_id, first_type, snapshot = next(events)
            assert first_type == "snapshot"
            assert snapshot["role"] == "admin"
            default = _queue(snapshot["queues"], "default")
            assert default["paused"] is True
            assert {"delayed", "in_flight", "dead_letters"} <= set(default)
            assert any("chat" in (w["info"] or {}).get("queues", []) for w in snapshot["workers"])
            assert set(snapshot["stats"]["by_status"]) >= {"queued", "succeeded", "failed"}
            assert any(m["id"] == "dev/echo" for m in snapshot["models"])

            job = submit(http, "noop", {"live": "feed"})
            queues = _until(events, lambda t, d: t == "queues"
                            and _queue(d["data"], "default")["queued"] > default["queued"],
                            "queues update counting the job in the paused default queue")
            assert _queue(queues["data"], "default")["paused"] is True
            _until(events, lambda t, d: t == "jobs" and any(
                j["id"] == job["id"] and j["status"] == "queued" for j in d["data"]),
                "jobs event with the new job, queued")

            assert http.post("/v1/admin/queues/default/resume").status_code == 200
            succeeded = snapshot["stats"]["by_status"]["succeeded"]["total"]
            seen = _until_all(events, {
                "the job, succeeded": lambda t, d: t == "jobs" and any(
                    j["id"] == job["id"] and j["status"] == "succeeded" for j in d["data"]),
                "default resumed and drained": lambda t, d: t == "queues"
                and not _queue(d["data"], "default")["paused"]
                and _queue(d["data"], "default")["queued"] == 0,
                "stats counting it": lambda t, d: t == "stats"
                and d["by_status"]["succeeded"]["total"] > succeeded,
            })
            assert seen["stats counting it"]["window_s"] == 3600
        assert wait_status(http, job["id"])["status"] == "succeeded"
        assert "-" in first_id
    finally:
        http.post("/v1/admin/queues/default/resume")


def test_every_dashboard_gets_the_same_frames_from_one_reader_per_process(
    stack: Any, http: httpx.Client
) -> None:
    """Frame ids come from the process's one feed: two dashboards receive the very same
    `workers` frames (a reader per client would number its own)."""
    with connect_sse(http, "GET", LIVE, timeout=httpx.Timeout(20.0)) as one, \
            connect_sse(http, "GET", LIVE, headers={"Last-Event-ID": "1-1"},
                        timeout=httpx.Timeout(20.0)) as two:
        first, second = _events(one), _events(two)
        assert next(first)[1] == "snapshot"
        assert next(second)[1] == "snapshot"  # a reconnect starts with a snapshot too
        ids_one = [i for i, t, _ in itertools.islice(first, 6) if t == "workers"]
        ids_two = [i for i, t, _ in itertools.islice(second, 6) if t == "workers"]
    assert ids_one and ids_two
    assert set(ids_one) & set(ids_two), (ids_one, ids_two)


def test_a_ticket_opens_the_feed_without_a_header_and_a_bad_one_is_refused(
    stack: Any, http: httpx.Client
) -> None:
    issued = http.post("/v1/admin/live/tickets")
    assert issued.status_code == 201, issued.text
    ticket = issued.json()
    assert ticket["expires_in"] > 0 and ticket["url"] == f"{LIVE}?ticket={ticket['ticket']}"

    with httpx.Client(base_url=stack.base_url, timeout=10.0) as anonymous:
        with connect_sse(anonymous, "GET", ticket["url"]) as source:
            assert source.response.status_code == 200
            _, type_, snapshot = next(_events(source))
            assert type_ == "snapshot" and snapshot["role"] == "admin"

        tampered = ticket["ticket"][:-4] + ("BBBB" if ticket["ticket"].endswith("AAAA")
                                            else "AAAA")
        for url in (f"{LIVE}?ticket=not-a-ticket", f"{LIVE}?ticket={tampered}", LIVE):
            refused = anonymous.get(url)
            assert refused.status_code == 401, (url, refused.text)
            assert refused.json()["error"]["code"] in ("INVALID_CREDENTIALS",
                                                       "AUTHENTICATION_REQUIRED")
        # A ticket is not a credential for anything else.
        other = anonymous.get("/v1/admin/queues",
                              headers={"Authorization": f"Bearer {ticket['ticket']}"})
        assert other.status_code == 401


def test_a_normal_user_is_refused_every_dashboard_route(stack: Any, http: httpx.Client) -> None:
    user = new_user(http, stack.headers)
    for method, path in READ_ROUTES:
        response = http.request(method, path, headers=user.headers)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_viewers_and_operators_read_the_feed(stack: Any, http: httpx.Client, role: str) -> None:
    made = http.post("/v1/admin/users", json={"email": f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                                              "password": "correct horse battery staple",
                                              "role": role})
    if made.status_code == 422:
        pytest.skip(f"the '{role}' role does not exist on this server yet")
    assert made.status_code == 201, made.text
    token = login(http, made.json()["email"])
    headers = {"Authorization": f"Bearer {token}"}
    ticket = http.post("/v1/admin/live/tickets", headers=headers)
    assert ticket.status_code == 201, ticket.text
    with httpx.Client(base_url=stack.base_url, timeout=10.0) as anonymous:
        with connect_sse(anonymous, "GET", ticket.json()["url"]) as source:
            _, type_, snapshot = next(_events(source))
    assert type_ == "snapshot" and snapshot["role"] == role
    assert http.get("/v1/admin/queues/history", headers=headers).status_code == 200
    assert http.get("/v1/admin/model-traffic", headers=headers).status_code == 200


def _insert_jobs(database_url: str, rows: list[dict[str, Any]]) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        for row in rows:
            db.execute(
                "INSERT INTO jobs (id, kind, owner_id, status, input, created_at, enqueued_at,"
                " started_at, finished_at) VALUES (%s, %s, 'history-test', %s, %s, %s, %s, %s,"
                " %s)",
                (str(uuid.uuid4()), row["kind"], row["status"], Jsonb({}), row["created"],
                 row["created"], row["started"], row["finished"]))


def _bucket(history: dict[str, Any], queue: str, minute: datetime) -> dict[str, Any]:
    index = [datetime.fromisoformat(m) for m in history["minutes"]].index(minute)
    series = next(q for q in history["queues"] if q["name"] == queue)
    return {name: values[index] for name, values in series.items() if name != "name"}


def test_history_buckets_finished_jobs_per_queue_and_minute(
    stack: Any, http: httpx.Client, database_url: str
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # Minutes well inside the hour, where no real `deploy` job of this run finished.
    busy, quiet, outside = now - timedelta(minutes=40), now - timedelta(minutes=39), \
        now - timedelta(minutes=75)
    before = http.get("/v1/admin/queues/history", params={"minutes": 60}).json()
    assert len(before["minutes"]) == 60
    assert datetime.fromisoformat(before["minutes"][-1]) in (now, now + timedelta(minutes=1))
    assert _bucket(before, "deploy", busy)["finished"] == 0
    assert _bucket(before, "deploy", quiet)["finished"] == 0

    def job(kind: str, status: str, minute: datetime, run_s: float | None,
            wait_s: float = 0.5) -> dict[str, Any]:
        finished = minute + timedelta(seconds=20)
        started = None if run_s is None else finished - timedelta(seconds=run_s)
        created = (started or finished) - timedelta(seconds=wait_s)
        return {"kind": kind, "status": status, "created": created, "started": started,
                "finished": finished}

    _insert_jobs(database_url, [
        job("deploy", "succeeded", busy, 1.0), job("deploy", "succeeded", busy, 2.0),
        job("deploy", "failed", busy, 3.0, wait_s=4.5),
        job("deploy", "cancelled", quiet, None), job("deploy", "succeeded", quiet, 10.0),
        job("deploy", "succeeded", outside, 1.0),  # before the window
    ])

    def counted() -> dict[str, Any] | None:
        history = http.get("/v1/admin/queues/history", params={"minutes": 60}).json()
        return history if _bucket(history, "deploy", busy)["finished"] == 3 else None

    history = poll(counted, timeout_s=15, what="the inserted jobs in the history")
    first = _bucket(history, "deploy", busy)
    assert (first["succeeded"], first["failed"], first["cancelled"]) == (2, 1, 0)
    assert first["run_p50_s"] == pytest.approx(2.0)
    assert first["run_p95_s"] == pytest.approx(2.9)  # percentile_cont over 1, 2, 3
    assert first["wait_p50_s"] == pytest.approx(0.5)
    assert first["wait_p95_s"] == pytest.approx(4.1)  # over 0.5, 0.5, 4.5
    second = _bucket(history, "deploy", quiet)
    assert (second["finished"], second["succeeded"], second["cancelled"]) == (2, 1, 1)
    assert second["run_p50_s"] == pytest.approx(10.0)  # the cancelled job never ran
    deploy = next(q for q in history["queues"] if q["name"] == "deploy")
    assert sum(deploy["finished"]) == 5 + sum(
        next(q for q in before["queues"] if q["name"] == "deploy")["finished"])
    assert all(len(q["finished"]) == 60 for q in history["queues"])

    for bad in ("0", "1441", "sixty"):
        refused = http.get("/v1/admin/queues/history", params={"minutes": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "VALIDATION_FAILED"


def test_model_traffic_counts_a_models_requests_and_completions(
    stack: Any, http: httpx.Client
) -> None:
    user = new_user(http, stack.headers)
    with client(stack) as own:
        own.headers["Authorization"] = f"Bearer {user.key}"
        job = submit(own, "chat", {"model": "dev/echo",
                                   "messages": [{"role": "user", "content": "count me"}]})
        assert wait_status(own, job["id"])["status"] == "succeeded"

    def counted() -> dict[str, Any] | None:
        data = http.get("/v1/admin/model-traffic").json()["data"]
        echo = next((m for m in data if m["id"] == "dev/echo"), None)
        return echo if echo and echo["requests_24h"] >= 1 and echo["completions_24h"] >= 1 \
            else None

    echo = poll(counted, timeout_s=20, what="dev/echo's traffic")
    assert echo["status"] == "enabled" and echo["provider"]
    assert echo["requests_1h"] >= 1 and echo["errors_24h"] >= 0
    assert echo["deployment"] is None
