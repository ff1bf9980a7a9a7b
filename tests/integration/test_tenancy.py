"""Tenancy: user B holding user A's ids gets 404 from every route that takes an id, and
nothing of A's changes; list routes never show another user's rows.

The matrix is table-driven: a later resource adds one `Resource` row to `RESOURCES`
(how A creates one, which routes take its id, how A sees its state, where it is listed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, create_key, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import lorem_input, poll
from tests.integration.knowledge_files import create_base, ingest
from tests.integration.soft_webauthn import SoftAuthenticator

Probe = tuple[str, str]  # (method, path with `{id}`); method "WS" opens a WebSocket


@dataclass(frozen=True)
class Resource:
    name: str
    create: Callable[[httpx.Client, User], str]
    # A's view of the resource: must be the same before and after B's probes.
    state: Callable[[httpx.Client, User, str], Any]
    probes: list[Probe]
    list_path: str | None = None
    list_ids: Callable[[dict[str, Any]], set[str]] = field(
        default=lambda body: {row["id"] for row in body["data"]})


def _submit_slow_job(http: httpx.Client, owner: User) -> str:
    # A slow dev model keeps the job active for the whole probe.
    response = http.post("/v1/jobs", headers=owner.headers, json={
        "kind": "chat", "input": lorem_input(words=400, delay_ms=50)})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _cancelled_job(http: httpx.Client, owner: User) -> str:
    job_id = _submit_slow_job(http, owner)
    assert http.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    return job_id


def _job_state(http: httpx.Client, owner: User, job_id: str) -> Any:
    body = http.get(f"/v1/jobs/{job_id}", headers=owner.headers).json()
    status = "active" if body["status"] in ("queued", "running") else body["status"]
    return status, body["error"]


def _key(http: httpx.Client, owner: User) -> str:
    return str(create_key(http, owner.headers, name="tenancy")["id"])


def _key_state(http: httpx.Client, owner: User, key_id: str) -> Any:
    keys = http.get("/v1/keys", headers=owner.headers).json()["data"]
    return [(k["id"], k["revoked_at"]) for k in keys if k["id"] == key_id]


_JOB_PROBES: list[Probe] = [
    ("GET", "/v1/jobs/{id}"), ("POST", "/v1/jobs/{id}/cancel"),
    ("POST", "/v1/jobs/{id}/retry"), ("GET", "/v1/jobs/{id}/events"),
    ("WS", "/v1/jobs/{id}/ws"),
]

def _knowledge_base(http: httpx.Client, owner: User) -> str:
    return str(create_base(http, owner.headers, name="tenancy", tags=["t"])["id"])


def _knowledge_state(http: httpx.Client, owner: User, base_id: str) -> Any:
    body = http.get(f"/v1/knowledge/{base_id}", headers=owner.headers).json()
    return body["name"], body["tags"], body["visibility"], body["document_count"]


def _document(http: httpx.Client, owner: User) -> str:
    base_id = _knowledge_base(http, owner)
    doc = ingest(http, base_id, "tenancy.txt", b"Tenancy probes must find nothing here.\n",
                 "text/plain", headers=owner.headers)
    return str(doc["id"])


def _document_state(http: httpx.Client, owner: User, document_id: str) -> Any:
    body = http.get(f"/v1/documents/{document_id}", headers=owner.headers).json()
    return body["status"], body["chunk_count"], body["job_id"]


def _chain(http: httpx.Client, owner: User) -> str:
    response = http.post("/v1/chains", headers=owner.headers, json={
        "name": "tenancy", "input_fields": [{"name": "topic"}],
        "prompts": [{"name": "A", "position": 1, "model": "dev/echo", "template": "{{topic}}"}]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _chain_state(http: httpx.Client, owner: User, chain_id: str) -> Any:
    body = http.get(f"/v1/chains/{chain_id}", headers=owner.headers).json()
    runs = http.get(f"/v1/chains/{chain_id}/runs", headers=owner.headers).json()["data"]
    return body["name"], body["version"], body["status"], len(runs)


def _chain_run(http: httpx.Client, owner: User) -> str:
    """A finished run, so its state cannot change while B probes it."""
    chain_id = _chain(http, owner)
    response = http.post(f"/v1/chains/{chain_id}/run", headers=owner.headers,
                         json={"inputs": {"topic": "tenancy"}})
    assert response.status_code == 202, response.text
    run_id = str(response.json()["id"])
    poll(lambda: http.get(f"/v1/chains/runs/{run_id}",
                          headers=owner.headers).json()["status"] == "succeeded",
         timeout_s=30, what="the run to finish")
    return run_id


def _chain_run_state(http: httpx.Client, owner: User, run_id: str) -> Any:
    body = http.get(f"/v1/chains/runs/{run_id}", headers=owner.headers).json()
    return body["status"], [(s["status"], s["output"], s["attempts"]) for s in body["steps"]]


def _passkey(http: httpx.Client, owner: User) -> str:
    init = http.post("/v1/auth/webauthn/register/init", headers=owner.headers, json={})
    device = SoftAuthenticator("localhost")  # the default WEBAUTHN_RP_ID and origin
    done = http.post("/v1/auth/webauthn/register/complete", headers=owner.headers, json={
        "credential": device.create(init.json()["options"], "http://localhost:8000")})
    assert done.status_code == 201, done.text
    return device.id


def _passkey_state(http: httpx.Client, owner: User, credential_id: str) -> Any:
    rows = http.get("/v1/auth/webauthn/credentials", headers=owner.headers).json()["data"]
    return [(row["id"], row["sign_count"]) for row in rows if row["id"] == credential_id]


def _unlisted_listing(http: httpx.Client, owner: User) -> str:
    """A listing its owner took off the marketplace: visible to nobody else (a listed one
    is public by design)."""
    listing = http.post("/v1/marketplace/listings", headers=owner.headers, json={
        "knowledge_id": _knowledge_base(http, owner), "title": "tenancy", "category": "t"})
    assert listing.status_code == 201, listing.text
    listing_id = str(listing.json()["id"])
    assert http.delete(f"/v1/marketplace/listings/{listing_id}",
                       headers=owner.headers).status_code == 200
    return listing_id


def _listing_state(http: httpx.Client, owner: User, listing_id: str) -> Any:
    body = http.get(f"/v1/marketplace/listings/{listing_id}", headers=owner.headers).json()
    return body["status"], body["acquisitions"], body["rating_count"]


def _agent(http: httpx.Client, owner: User) -> str:
    response = http.post("/v1/agents", headers=owner.headers, json={
        "name": "tenancy", "model": "dev/echo", "tools": [{"type": "calculator"}]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _agent_state(http: httpx.Client, owner: User, agent_id: str) -> Any:
    body = http.get(f"/v1/agents/{agent_id}", headers=owner.headers).json()
    return body["name"], body["model"], body["tools"], body["updated_at"]


def _agent_session(http: httpx.Client, owner: User) -> str:
    """A session with one finished turn, so its items cannot change while B probes it."""
    agent_id = _agent(http, owner)
    response = http.post("/v1/agents/sessions", headers=owner.headers,
                         json={"agentId": agent_id, "name": "tenancy"})
    assert response.status_code == 201, response.text
    session_id = str(response.json()["id"])
    turn = http.post(f"/v1/agents/sessions/{session_id}/messages", headers=owner.headers,
                     json={"role": "user", "content": "hello"})
    assert turn.status_code == 202, turn.text
    poll(lambda: http.get(f"/v1/agents/sessions/{session_id}",
                          headers=owner.headers).json()["status"] == "idle",
         timeout_s=30, what="the turn to finish")
    return session_id


def _agent_session_state(http: httpx.Client, owner: User, session_id: str) -> Any:
    body = http.get(f"/v1/agents/sessions/{session_id}", headers=owner.headers).json()
    return body["status"], [(i["type"], i["content"]) for i in body["items"]]


def _webhook(http: httpx.Client, owner: User) -> str:
    # An event none of these tests raises, so nothing is ever sent to this port.
    response = http.post("/v1/webhooks", headers=owner.headers, json={
        "url": "http://127.0.0.1:9/tenancy", "events": ["tool_call.failed"]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _webhook_state(http: httpx.Client, owner: User, webhook_id: str) -> Any:
    body = http.get(f"/v1/webhooks/{webhook_id}", headers=owner.headers).json()
    deliveries = http.get(f"/v1/webhooks/{webhook_id}/deliveries",
                          headers=owner.headers).json()["data"]
    return body["url"], body["events"], len(deliveries)


RESOURCES = [
    Resource("active job", _submit_slow_job, _job_state, _JOB_PROBES, "/v1/jobs"),
    Resource("cancelled job", _cancelled_job, _job_state, _JOB_PROBES, "/v1/jobs"),
    Resource("api key", _key, _key_state, [("DELETE", "/v1/keys/{id}")], "/v1/keys"),
    Resource("knowledge base", _knowledge_base, _knowledge_state, [
        ("GET", "/v1/knowledge/{id}"), ("PATCH", "/v1/knowledge/{id}"),
        ("DELETE", "/v1/knowledge/{id}"), ("GET", "/v1/knowledge/{id}/documents"),
        ("POST", "/v1/knowledge/{id}/documents")], "/v1/knowledge"),
    Resource("document", _document, _document_state, [
        ("GET", "/v1/documents/{id}"), ("DELETE", "/v1/documents/{id}"),
        ("POST", "/v1/documents/{id}/reingest")]),
    Resource("chain", _chain, _chain_state, [
        ("GET", "/v1/chains/{id}"), ("PUT", "/v1/chains/{id}"), ("DELETE", "/v1/chains/{id}"),
        ("POST", "/v1/chains/{id}/run"), ("GET", "/v1/chains/{id}/runs")], "/v1/chains"),
    Resource("chain run", _chain_run, _chain_run_state, [
        ("GET", "/v1/chains/runs/{id}"), ("POST", "/v1/chains/runs/{id}/resume"),
        ("POST", "/v1/chains/runs/{id}/rerun"), ("POST", "/v1/chains/runs/{id}/cancel"),
        ("GET", "/v1/chains/runs/{id}/events"), ("GET", "/v1/jobs/{id}")]),
    Resource("passkey", _passkey, _passkey_state,
             [("DELETE", "/v1/auth/webauthn/credentials/{id}")],
             "/v1/auth/webauthn/credentials"),
    Resource("unlisted listing", _unlisted_listing, _listing_state, [
        ("GET", "/v1/marketplace/listings/{id}"), ("DELETE", "/v1/marketplace/listings/{id}"),
        ("POST", "/v1/marketplace/listings/{id}/acquire"),
        ("POST", "/v1/marketplace/listings/{id}/ratings"),
        ("GET", "/v1/marketplace/listings/{id}/ratings")]),
    Resource("agent", _agent, _agent_state, [
        ("GET", "/v1/agents/{id}"), ("PUT", "/v1/agents/{id}"),
        ("DELETE", "/v1/agents/{id}")], "/v1/agents"),
    Resource("agent session", _agent_session, _agent_session_state, [
        ("GET", "/v1/agents/sessions/{id}"), ("DELETE", "/v1/agents/sessions/{id}"),
        ("POST", "/v1/agents/sessions/{id}/messages"),
        ("POST", "/v1/agents/sessions/{id}/tool_results"),
        ("GET", "/v1/agents/sessions/{id}/events")], "/v1/agents/sessions"),
    Resource("webhook", _webhook, _webhook_state, [
        ("GET", "/v1/webhooks/{id}"), ("DELETE", "/v1/webhooks/{id}"),
        ("GET", "/v1/webhooks/{id}/deliveries")], "/v1/webhooks"),
]


@pytest.fixture(scope="module")
def tenancy_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                  redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("tenancy"), database_url, redis_url,
                         env={**RELAXED_LOGIN_ENV,
                              "FILE_STORE_DIR": str(tmp_path_factory.mktemp("tenancy-files"))})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(tenancy_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tenancy_stack.base_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def alice(http: httpx.Client, tenancy_stack: Stack) -> User:
    return new_user(http, tenancy_stack.headers)


@pytest.fixture(scope="module")
def bob(http: httpx.Client, tenancy_stack: Stack) -> User:
    return new_user(http, tenancy_stack.headers)


def _probe(http: httpx.Client, stack: Stack, who: User, method: str, path: str) -> int:
    """The status B gets; a WebSocket refused before the handshake counts as its 403/404."""
    if method == "WS":
        url = stack.base_url.replace("http://", "ws://") + path
        try:
            with ws_connect(url, additional_headers=who.headers, open_timeout=5) as ws:
                ws.close()
                return 101
        except websockets.exceptions.InvalidStatus as exc:
            return 404 if exc.response.status_code == 403 else exc.response.status_code
    if method == "GET" and path.endswith("/events"):
        with http.stream("GET", path, headers=who.headers) as response:
            return response.status_code
    return http.request(method, path, headers=who.headers).status_code


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
def test_another_users_id_is_not_found_everywhere_and_changes_nothing(
    http: httpx.Client, tenancy_stack: Stack, alice: User, bob: User, resource: Resource
) -> None:
    resource_id = resource.create(http, alice)
    before = resource.state(http, alice, resource_id)
    for method, template in resource.probes:
        path = template.format(id=resource_id)
        assert _probe(http, tenancy_stack, bob, method, path) == 404, (method, path)
    assert resource.state(http, alice, resource_id) == before
    # The same ids do work for their owner, so the 404s above are about ownership.
    owner_get = next((p for m, p in resource.probes if m == "GET"), None)
    if owner_get is not None:
        path = owner_get.format(id=resource_id)
        assert http.get(path, headers=alice.headers).status_code == 200


@pytest.mark.parametrize("resource", [r for r in RESOURCES if r.list_path],
                         ids=lambda r: r.name)
def test_lists_never_show_another_users_rows(
    http: httpx.Client, alice: User, bob: User, resource: Resource
) -> None:
    assert resource.list_path is not None
    resource_id = resource.create(http, alice)
    mine = resource.list_ids(http.get(resource.list_path, headers=alice.headers).json())
    theirs = resource.list_ids(http.get(resource.list_path, headers=bob.headers).json())
    assert resource_id in mine
    assert resource_id not in theirs


def test_admins_see_everything_only_through_admin_routes(
    http: httpx.Client, tenancy_stack: Stack, alice: User
) -> None:
    job_id = _submit_slow_job(http, alice)
    # The bootstrap admin is a principal of its own: user routes scope it like anyone.
    assert http.get(f"/v1/jobs/{job_id}", headers=tenancy_stack.headers).status_code == 404
    usage = http.get("/v1/admin/usage", headers=tenancy_stack.headers).json()["usage"]
    assert any(row["owner_id"] == alice.id and row["kind"] == "chat" for row in usage)
    http.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers)
