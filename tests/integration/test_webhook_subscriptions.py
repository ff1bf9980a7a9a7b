"""Webhook subscriptions end to end: real uvicorn, real dramatiq workers, real Postgres and
Redis, and a receiver on 127.0.0.1 (the stack allows loopback outbound addresses, as an
operator's setting would) that checks every signature with the subscription's secret.

Each test uses a user of its own, so the events it sees are its own jobs' only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from pipelines.db.engine import sync_url
from tests.integration.accounts import RELAXED_LOGIN_ENV, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import lorem_input, poll, wait_status

MAX_ATTEMPTS = 3


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """Records every POST; answers 500 on paths under /fail, 204 elsewhere."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                self.send_response(500 if self.path.startswith("/fail") else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def hooks_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("webhooks"), database_url, redis_url,
                         env={**RELAXED_LOGIN_ENV, "WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                              "WEBHOOK_BACKOFF_S": "0.2", "WEBHOOK_MAX_BACKOFF_S": "0.5",
                              # The lost-delivery test waits for a sweep.
                              "SWEEPER_INTERVAL_S": "1", "SWEEPER_STALE_AFTER_S": "5"})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(hooks_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks_stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def user(http: httpx.Client, hooks_stack: Stack) -> Iterator[httpx.Client]:
    """A client acting as a new user of its own."""
    owner = new_user(http, hooks_stack.headers)
    with httpx.Client(base_url=hooks_stack.base_url, headers=owner.headers,
                      timeout=30) as client:
        yield client


def subscribe(user: httpx.Client, url: str, events: list[str],
              **extra: Any) -> dict[str, Any]:
    response = user.post("/v1/webhooks", json={"url": url, "events": events, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def deliveries(user: httpx.Client, webhook_id: str) -> list[dict[str, Any]]:
    response = user.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def settled(user: httpx.Client, webhook_id: str, count: int) -> list[dict[str, Any]]:
    """The webhook's deliveries once `count` of them are no longer pending."""
    def check() -> list[dict[str, Any]] | None:
        rows = deliveries(user, webhook_id)
        done = [r for r in rows if r["status"] != "pending"]
        return rows if len(done) >= count else None
    return poll(check, timeout_s=30, what=f"{count} settled deliveries")


def assert_signed(received: Received, secret: str) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Switchyard-Signature"], expected)


def chat_job(user: httpx.Client, body: dict[str, Any]) -> str:
    response = user.post("/v1/jobs", json={"kind": "chat", "input": body})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_subscriptions_are_validated_listed_read_and_deleted(
        user: httpx.Client, receiver: Receiver) -> None:
    unknown = user.post("/v1/webhooks", json={
        "url": receiver.url + "/x", "events": ["job.succeeded", "job.exploded"]})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["code"] == "VALIDATION_FAILED"
    assert "job.exploded" in unknown.text
    for bad in ({"url": "ftp://example.com/", "events": ["job.failed"]},
                {"url": receiver.url, "events": []}, {"events": ["job.failed"]}):
        assert user.post("/v1/webhooks", json=bad).status_code == 422
    made = subscribe(user, receiver.url + "/made", ["job.failed", "generation.done"])
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 30
    assert made["events"] == ["job.failed", "generation.done"]
    # Stack 2.9's field name, and a secret of the receiver's own.
    own = user.post("/v1/webhooks", json={
        "webhook_url": receiver.url + "/own", "events": ["tool_call.failed"],
        "secret": "my-own-secret-0123456789"})
    assert own.status_code == 201 and own.json()["secret"] == "my-own-secret-0123456789"
    shown = user.get(f"/v1/webhooks/{made['id']}")
    assert shown.status_code == 200 and shown.json()["secret"] is None
    listed = user.get("/v1/webhooks").json()["data"]
    assert [w["id"] for w in listed] == [own.json()["id"], made["id"]]
    assert all(w["secret"] is None for w in listed)
    assert user.get("/v1/webhooks?limit=1").json()["data"] == listed[:1]
    assert user.delete(f"/v1/webhooks/{made['id']}").status_code == 204
    assert user.get(f"/v1/webhooks/{made['id']}").status_code == 404
    assert user.delete(f"/v1/webhooks/{made['id']}").status_code == 404
    assert user.get("/v1/webhooks/not-a-uuid").status_code == 404
    bad_status = user.get(f"/v1/webhooks/{own.json()['id']}/deliveries?status=lost")
    assert bad_status.status_code == 422


def test_each_subscription_receives_exactly_its_events_signed_with_its_secret(
        user: httpx.Client, receiver: Receiver) -> None:
    done = subscribe(user, receiver.url + "/done", ["job.succeeded", "generation.done"])
    ended = subscribe(user, receiver.url + "/ended", ["job.failed", "job.cancelled"])

    ok = chat_job(user, {"model": "dev/echo",
                         "messages": [{"role": "user", "content": "hello hooks"}]})
    assert wait_status(user, ok)["status"] == "succeeded"
    rows = settled(user, done["id"], 2)
    assert sorted(r["event"] for r in rows) == ["generation.done", "job.succeeded"]
    assert {(r["status"], r["attempts"], r["last_status_code"]) for r in rows} == {
        ("delivered", 1, 204)}
    assert all(r["delivered_at"] and r["last_error"] is None for r in rows)
    # The same events reached the receiver, signed with that subscription's secret.
    got = poll(lambda: len(receiver.at("/done")) >= 2 and receiver.at("/done"), what="posts")
    by_event = {r.payload["event"]: r for r in got}
    assert set(by_event) == {"job.succeeded", "generation.done"}
    for received in got:
        assert_signed(received, done["secret"])
        assert received.headers["X-Switchyard-Event"] == received.payload["event"]
        assert set(received.payload) == {"event", "timestamp", "data"}
    generation = by_event["generation.done"].payload["data"]
    assert generation["job_id"] == ok and generation["content"] == "hello hooks"
    assert generation["usage"]["completion_tokens"] > 0
    assert by_event["job.succeeded"].payload["data"]["status"] == "succeeded"

    failed = chat_job(user, {"model": "dev/echo", "dev_options": {"fail_after_tokens": 1},
                             "messages": [{"role": "user", "content": "a b c"}]})
    assert wait_status(user, failed)["status"] == "failed"
    slow = chat_job(user, lorem_input(words=400, delay_ms=50))
    wait_status(user, slow, statuses=["running"])
    assert user.post(f"/v1/jobs/{slow}/cancel").status_code == 200
    rows = settled(user, ended["id"], 2)
    assert {(r["event"], r["payload"]["data"]["job_id"]) for r in rows} == {
        ("job.failed", failed), ("job.cancelled", slow)}
    failure = next(r for r in rows if r["event"] == "job.failed")["payload"]["data"]
    assert failure["error"]["code"] == "UPSTREAM_ERROR"
    for received in receiver.at("/ended"):
        assert_signed(received, ended["secret"])
    # An event's deliveries to all subscriptions are recorded by one statement: had `done`
    # wanted the failed or cancelled job's events, its rows would exist by now.
    assert len(deliveries(user, done["id"])) == 2
    with pytest.raises(AssertionError):
        assert_signed(receiver.at("/ended")[0], done["secret"])


def test_agent_tool_calls_raise_tool_events(user: httpx.Client, receiver: Receiver) -> None:
    hook = subscribe(user, receiver.url + "/tools",
                     ["tool_call.started", "tool_call.completed", "tool_call.failed"])
    agent = user.post("/v1/agents", json={
        "name": "offline", "model": "dev/tools", "tools": [{"type": "calculator"}]})
    assert agent.status_code == 201, agent.text
    session = user.post("/v1/agents/sessions",
                        json={"agentId": agent.json()["id"], "name": "hooks"})
    session_id = session.json()["id"]
    for content in ("calculator: 6*7", "calculator: 1/0"):
        sent = user.post(f"/v1/agents/sessions/{session_id}/messages",
                         json={"role": "user", "content": content})
        assert sent.status_code == 202, sent.text
        assert wait_status(user, sent.json()["id"], timeout_s=30)["status"] == "succeeded"
    rows = settled(user, hook["id"], 4)
    events = sorted((r["payload"]["data"]["tool_call_id"], r["event"]) for r in rows)
    calls = sorted({call_id for call_id, _ in events})
    assert len(calls) == 2 and len(events) == 4
    by_event = {r["event"]: r["payload"]["data"] for r in rows
                if r["event"] != "tool_call.started"}
    completed, failed = by_event["tool_call.completed"], by_event["tool_call.failed"]
    assert completed["tool_name"] == "calculator" and completed["result"] == "42"
    assert completed["arguments"] == '{"expression": "6*7"}'
    assert completed["execution_time_ms"] >= 0 and completed["session_id"] == session_id
    assert failed["result"] == "" and "division by zero" in failed["error"]
    assert all(r["status"] == "delivered" for r in rows)
    for received in receiver.at("/tools"):
        assert_signed(received, hook["secret"])


def test_a_failing_receiver_is_retried_with_backoff_then_the_delivery_fails(
        user: httpx.Client, receiver: Receiver) -> None:
    hook = subscribe(user, receiver.url + "/fail", ["job.succeeded"])
    job_id = chat_job(user, {"model": "dev/echo",
                             "messages": [{"role": "user", "content": "retry me"}]})
    assert wait_status(user, job_id)["status"] == "succeeded"
    [row] = settled(user, hook["id"], 1)
    assert row["status"] == "failed" and row["attempts"] == MAX_ATTEMPTS
    assert row["last_status_code"] == 500 and row["last_error"] == "receiver answered 500"
    posts = receiver.at("/fail")
    assert len(posts) == MAX_ATTEMPTS
    assert {p.headers["X-Switchyard-Delivery"] for p in posts} == {row["id"]}
    assert len({p.body for p in posts}) == 1  # the same signed body every time
    failed = user.get(f"/v1/webhooks/{hook['id']}/deliveries?status=failed").json()["data"]
    assert [r["id"] for r in failed] == [row["id"]]


def test_another_users_webhook_is_not_found(http: httpx.Client, hooks_stack: Stack,
                                            user: httpx.Client, receiver: Receiver) -> None:
    hook = subscribe(user, receiver.url + "/mine", ["job.failed"])
    other = new_user(http, hooks_stack.headers)
    for method, path in (("GET", f"/v1/webhooks/{hook['id']}"),
                         ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
                         ("DELETE", f"/v1/webhooks/{hook['id']}")):
        assert http.request(method, path, headers=other.headers).status_code == 404
    assert http.get("/v1/webhooks", headers=other.headers).json()["data"] == []
    assert user.get(f"/v1/webhooks/{hook['id']}").status_code == 200


def test_a_delivery_whose_message_was_lost_is_sent_by_the_sweeper(
        user: httpx.Client, receiver: Receiver, database_url: str) -> None:
    hook = subscribe(user, receiver.url + "/lost", ["job.succeeded"])
    # Recorded but never sent, as when a worker dies between the two: only the sweeper
    # can find it. Just past this stack's SWEEPER_STALE_AFTER_S, and well short of the
    # default, which other stacks on the run's database keep.
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            delivery_id = str(conn.execute(text("""
                INSERT INTO webhook_deliveries (id, webhook_id, owner_id, event, payload,
                                                created_at, updated_at)
                SELECT gen_random_uuid(), id, owner_id, 'job.succeeded', CAST(:payload AS jsonb),
                       now() - interval '10 seconds', now() - interval '10 seconds'
                  FROM webhook_subscriptions WHERE id = :webhook_id
                RETURNING id"""), {"webhook_id": hook["id"], "payload": orjson.dumps({
                    "event": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z",
                    "data": {"job_id": "lost"}}).decode()}).scalar_one())
    finally:
        engine.dispose()
    [row] = settled(user, hook["id"], 1)
    assert (row["id"], row["status"], row["attempts"]) == (delivery_id, "delivered", 1)
    [received] = receiver.at("/lost")
    assert received.headers["X-Switchyard-Delivery"] == delivery_id
    assert received.payload["data"] == {"job_id": "lost"}
    assert_signed(received, hook["secret"])
