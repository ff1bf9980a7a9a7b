"""Roles on the admin routes — admin, operator, viewer and user, against one table of expected
answers — the audit trail of operator actions, and every attempt of a job with the worker
that ran it. Real uvicorn, worker processes, Postgres and Redis (dev models)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from pipelines.db.engine import sync_url
from pipelines.db.tables import users
from tests.integration.accounts import User, create_key, create_user, new_user, unique_email
from tests.integration.conftest import Stack
from tests.integration.jobclient import lorem_input, poll, submit, wait_status
from tests.integration.test_cli_accounts import _cli

ROLES = ("admin", "operator", "viewer", "user")
READERS = frozenset({"admin", "operator", "viewer"})
ACTORS = frozenset({"admin", "operator"})
ADMINS = frozenset({"admin"})
# A killed worker process is replaced by its supervisor, which hands its messages back.
RECOVERY_DEADLINE_S = 45.0


@dataclass
class People:
    by_role: dict[str, User]
    # A plain user whose jobs the others look at and act on.
    owner: User
    # A registry model every role reads (admin-only routes change it).
    model: str


@pytest.fixture(scope="module")
def people(_module_stack: Stack) -> People:
    with httpx.Client(base_url=_module_stack.base_url, timeout=10.0) as http:
        by_role = {role: new_user(http, _module_stack.headers, role=role) for role in ROLES}
        owner = new_user(http, _module_stack.headers)
        model = f"roles-{uuid.uuid4().hex[:8]}"
        created = http.post("/v1/admin/models", headers=_module_stack.headers, json={
            "id": model, "provider": "dev", "upstream_model": "echo"})
        assert created.status_code == 201, created.text
    return People(by_role=by_role, owner=owner, model=model)


@pytest.fixture
def as_owner(stack: Stack, people: People) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers=people.owner.headers,
                      timeout=10.0) as client:
        yield client


def _as(stack: Stack, user: User) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers=user.headers, timeout=10.0)


def _failing() -> dict[str, Any]:
    return lorem_input(5, dev_options={"fail_after_tokens": 2})


@dataclass
class Cell:
    """One admin route, who may use it, and what it answers them."""

    method: str
    path: str
    allowed: frozenset[str]
    ok: int = 200
    body: dict[str, Any] | None = None
    stream: bool = False


def _table(ctx: dict[str, str]) -> list[Cell]:
    """Every route the dashboard reads or acts through, and the admin-only ones, in the
    order they run (pause before resume; a model is created before it is deleted)."""
    nobody = str(uuid.uuid4())
    return [
        # Reading: admins, operators and viewers.
        Cell("GET", "/v1/system/status", READERS),
        Cell("GET", "/v1/system/metrics", READERS),
        Cell("GET", "/v1/admin/jobs", READERS),
        Cell("GET", "/v1/admin/jobs/stats", READERS),
        Cell("GET", "/v1/admin/jobs/failures", READERS),
        Cell("GET", f"/v1/admin/jobs/{ctx['failed']}", READERS),
        Cell("GET", f"/v1/admin/jobs/{ctx['failed']}/events", READERS, stream=True),
        Cell("GET", "/v1/admin/queues", READERS),
        Cell("GET", "/v1/admin/audit", READERS),
        Cell("GET", "/v1/admin/usage", READERS),
        Cell("GET", "/v1/admin/models", READERS),
        Cell("GET", f"/v1/admin/models/{ctx['model']}", READERS),
        Cell("GET", "/v1/deployments", READERS),
        Cell("GET", "/v1/deployments/events", READERS, stream=True),
        Cell("GET", "/v1/resources", READERS),
        # Acting on jobs and queues: admins and operators.
        Cell("POST", f"/v1/admin/jobs/{ctx['failed']}/retry", ACTORS, 202),
        Cell("POST", f"/v1/admin/jobs/{ctx['running']}/cancel", ACTORS),
        Cell("POST", "/v1/admin/jobs/bulk", ACTORS,
             body={"action": "retry", "dry_run": True, "filter": {"owner_id": ctx["owner"]}}),
        Cell("POST", "/v1/admin/jobs/bulk", ACTORS,
             body={"action": "cancel", "filter": {"owner_id": nobody}}),
        Cell("POST", "/v1/admin/queues/ingest/pause", ACTORS),
        Cell("POST", "/v1/admin/queues/ingest/resume", ACTORS),
        Cell("POST", "/v1/admin/queues/ingest/dead-letters/purge", ACTORS),
        # Users, models and deployments: admins only.
        Cell("GET", "/v1/admin/users", ADMINS),
        Cell("POST", "/v1/admin/users", ADMINS, 201,
             body={"email": unique_email("made"), "password": "long enough password"}),
        Cell("GET", f"/v1/admin/users/{ctx['target']}", ADMINS),
        Cell("PATCH", f"/v1/admin/users/{ctx['target']}", ADMINS, body={"role": "operator"}),
        Cell("POST", f"/v1/admin/users/{ctx['target']}/deactivate", ADMINS),
        Cell("POST", "/v1/admin/models", ADMINS, 201,
             body={"id": ctx["new_model"], "provider": "dev", "upstream_model": "lorem"}),
        Cell("PUT", f"/v1/admin/models/{ctx['model']}", ADMINS, body={"description": "x"}),
        Cell("DELETE", f"/v1/admin/models/{ctx['new_model']}", ADMINS, 204),
        Cell("POST", f"/v1/models/{ctx['model']}/load", ADMINS, 409),  # not a deployment
        Cell("POST", f"/v1/deployments/{nobody}/restart", ADMINS, 404),
        Cell("DELETE", f"/v1/deployments/{nobody}", ADMINS, 404),
    ]


def _call(client: httpx.Client, cell: Cell) -> httpx.Response:
    if cell.stream:  # SSE: the status line is enough; hang up at once
        with client.stream(cell.method, cell.path) as response:
            if response.status_code != 200:
                response.read()
            return response
    return client.request(cell.method, cell.path, json=cell.body)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_admin_routes(
    role: str, http: httpx.Client, stack: Stack, people: People, as_owner: httpx.Client,
) -> None:
    failed = submit(as_owner, "chat", _failing())
    running = submit(as_owner, "chat", lorem_input(400, delay_ms=50))
    assert wait_status(as_owner, failed["id"])["status"] == "failed"
    target = create_user(http, stack.headers)
    ctx = {"failed": failed["id"], "running": running["id"], "owner": people.owner.id,
           "target": target["id"], "model": people.model,
           "new_model": f"roles-new-{uuid.uuid4().hex[:8]}"}
    me = people.by_role[role]
    mismatches = []
    try:
        with _as(stack, me) as client:
            for cell in _table(ctx):
                response = _call(client, cell)
                expected = cell.ok if role in cell.allowed else 403
                if response.status_code != expected:
                    mismatches.append((cell.method, cell.path, response.status_code,
                                       expected, response.text[:200]))
                elif expected == 403:  # (/v1/models/... answers in OpenAI's shape)
                    assert response.json()["error"]["code"].upper() == "PERMISSION_DENIED"
    finally:
        http.post(f"/v1/admin/jobs/{running['id']}/cancel")
        http.post("/v1/admin/queues/ingest/resume")
    assert not mismatches, "\n".join(map(str, mismatches))

    # What the answers claim happened did happen, and a refusal changed nothing.
    job = as_owner.get(f"/v1/jobs/{failed['id']}").json()
    person = http.get(f"/v1/admin/users/{target['id']}").json()
    made = http.get(f"/v1/admin/models/{ctx['new_model']}").status_code
    if role in ACTORS:
        assert job["attempts"] == 2 or job["status"] in ("queued", "running"), job
    else:
        assert job["status"] == "failed" and job["attempts"] == 1, job
    if role in ADMINS:
        assert person["role"] == "operator" and person["is_active"] is False
    else:
        assert person["role"] == "user" and person["is_active"] is True
    assert made == 404  # created and deleted by the admin; never created by the others


@pytest.mark.parametrize("role", ROLES)
def test_the_session_tells_the_dashboard_the_role_and_its_permissions(
    role: str, stack: Stack, people: People,
) -> None:
    expected = {"admin": ["act_jobs", "admin", "read"], "operator": ["act_jobs", "read"],
                "viewer": ["read"], "user": []}
    with _as(stack, people.by_role[role]) as client:
        body = client.get("/v1/auth/session").json()
    assert body["role"] == role and body["user"]["role"] == role
    assert body["permissions"] == expected[role]


def test_the_bootstrap_key_is_an_admin_to_the_session(http: httpx.Client) -> None:
    body = http.get("/v1/auth/session").json()
    assert (body["role"], body["via"], body["user"]) == ("admin", "bootstrap", None)
    assert body["permissions"] == ["act_jobs", "admin", "read"]


def test_an_operator_pauses_a_queue_and_bulk_retries_and_the_audit_names_them(
    stack: Stack, people: People, as_owner: httpx.Client,
) -> None:
    operator = people.by_role["operator"]
    with _as(stack, operator) as ops:
        try:
            paused = ops.post("/v1/admin/queues/default/pause")
            assert paused.status_code == 200 and paused.json()["paused"] is True, paused.text
            waiting = submit(as_owner, "noop", {"n": "held"})
            failures = [submit(as_owner, "chat", _failing()) for _ in range(2)]
            for job in failures:
                assert wait_status(as_owner, job["id"])["status"] == "failed"
            # The chat jobs ran meanwhile; the paused queue's job was not taken.
            assert as_owner.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
        finally:
            resumed = ops.post("/v1/admin/queues/default/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        assert wait_status(as_owner, waiting["id"])["status"] == "succeeded"

        selection = {"owner_id": people.owner.id, "status": "failed", "error": "after 2 tok"}
        bulk = ops.post("/v1/admin/jobs/bulk", json={"action": "retry", "filter": selection})
        assert bulk.status_code == 200, bulk.text
        assert {j["id"] for j in failures} <= set(bulk.json()["job_ids"])
        for job in failures:
            assert wait_status(as_owner, job["id"], statuses=("failed",))["attempts"] == 2
            detail = ops.get(f"/v1/admin/jobs/{job['id']}").json()
            assert [(a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
                (1, "failed"), (2, "failed")]

        entries = ops.get("/v1/admin/audit", params={"limit": 50}).json()["data"]
    mine = [e for e in entries if e["actor_id"] == operator.id]
    assert [e["action"] for e in mine][:3] == ["jobs.bulk_retry", "queue.resume",
                                               "queue.pause"]
    assert all(e["actor_role"] == "operator" for e in mine)
    assert all(e["actor"] == f"{operator.id} (key {operator.key_id})" for e in mine)
    assert mine[0]["details"]["job_ids"] and mine[1]["target"] == "default"


def test_a_viewer_reads_but_every_action_is_refused_and_not_audited(
    http: httpx.Client, stack: Stack, people: People, as_owner: httpx.Client,
) -> None:
    viewer = people.by_role["viewer"]
    failed = submit(as_owner, "chat", _failing())
    wait_status(as_owner, failed["id"])
    with _as(stack, viewer) as client:
        assert client.get(f"/v1/admin/jobs/{failed['id']}").status_code == 200
        for path, body in ((f"/v1/admin/jobs/{failed['id']}/retry", None),
                           ("/v1/admin/jobs/bulk", {"action": "retry", "dry_run": True}),
                           ("/v1/admin/queues/chat/pause", None)):
            refused = client.post(path, json=body)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
    queues = {q["name"]: q for q in http.get("/v1/admin/queues").json()["data"]}
    assert queues["chat"]["paused"] is False
    entries = http.get("/v1/admin/audit", params={"limit": 500}).json()["data"]
    assert not [e for e in entries if e["actor_id"] == viewer.id]


def test_key_scopes_only_narrow_an_operators_rights(
    stack: Stack, people: People,
) -> None:
    operator = people.by_role["operator"]
    for scopes, jobs_status, users_status in ((["jobs"], 403, 403), (["admin"], 200, 403)):
        with _as(stack, operator) as client:
            key = create_key(client, operator.headers, scopes=scopes)
        with httpx.Client(base_url=stack.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key['key']}"}) as client:
            assert client.get("/v1/admin/jobs").status_code == jobs_status, scopes
            assert client.get("/v1/admin/users").status_code == users_status, scopes


def test_operators_and_viewers_see_only_their_own_jobs_on_the_v1_routes(
    stack: Stack, people: People, as_owner: httpx.Client,
) -> None:
    theirs = submit(as_owner, "noop", {"n": "owners"})
    wait_status(as_owner, theirs["id"])
    for role in ("operator", "viewer"):
        with _as(stack, people.by_role[role]) as client:
            assert client.get(f"/v1/jobs/{theirs['id']}").status_code == 404
            assert client.post(f"/v1/jobs/{theirs['id']}/retry").status_code == 404
            own = submit(client, "noop", {"n": role})
            listed = [j["id"] for j in client.get("/v1/jobs").json()["data"]]
            assert own["id"] in listed and theirs["id"] not in listed


def test_the_cli_creates_operators_and_viewers(database_url: str) -> None:
    made = {}
    for role in ("operator", "viewer"):
        email = unique_email(f"cli-{role}")
        result = _cli(database_url, "users", "create", "--email", email, "--role", role,
                      extra_env={"SWITCHYARD_USER_PASSWORD": "a long enough password"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"created {role} ")
        made[email] = role
    wrong = _cli(database_url, "users", "create", "--email", unique_email(), "--role", "root",
                 extra_env={"SWITCHYARD_USER_PASSWORD": "a long enough password"})
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    engine = create_engine(sync_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(select(users.c.email, users.c.role)
                            .where(users.c.email.in_(list(made)))).all()
    engine.dispose()
    assert dict(rows) == made


def test_an_unknown_role_is_refused_when_creating_or_changing_a_user(
    http: httpx.Client, stack: Stack,
) -> None:
    refused = http.post("/v1/admin/users", json={"email": unique_email(), "role": "root",
                                                 "password": "long enough password"})
    assert refused.status_code == 422, refused.text
    target = create_user(http, stack.headers)["id"]
    assert http.patch(f"/v1/admin/users/{target}",
                      json={"role": "superuser"}).status_code == 422
    assert http.patch(f"/v1/admin/users/{target}",
                      json={"role": "viewer"}).json()["role"] == "viewer"


# --- attempts --------------------------------------------------------------------------


def _attempts(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    detail = http.get(f"/v1/admin/jobs/{job_id}")
    assert detail.status_code == 200, detail.text
    return detail.json()["attempts"]  # type: ignore[no-any-return]


def _chat_workers(http: httpx.Client) -> dict[int, str]:
    """Live worker processes serving the chat queue: pid -> worker id."""
    workers = http.get("/v1/system/status").json()["workers"]
    return {w["info"]["pid"]: w["id"] for w in workers
            if w["info"] and "chat" in w["info"]["queues"]}


def _when(raw: str) -> dt.datetime:
    return dt.datetime.fromisoformat(raw)


def test_every_attempt_names_its_worker_and_timings(
    http: httpx.Client, as_owner: httpx.Client,
) -> None:
    ok = submit(as_owner, "chat", {"model": "dev/echo",
                                   "messages": [{"role": "user", "content": "hi"}]})
    bad = submit(as_owner, "chat", _failing())
    slow = submit(as_owner, "chat", lorem_input(400, delay_ms=50))
    for job in (ok, bad):
        wait_status(as_owner, job["id"])
    poll(lambda: _attempts(http, slow["id"]), what="the slow job to be claimed")
    assert http.post(f"/v1/admin/jobs/{slow['id']}/cancel").status_code == 200
    workers = _chat_workers(http)

    outcomes = {}
    for job in (ok, bad, slow):
        [attempt] = _attempts(http, job["id"])
        assert attempt["attempt"] == 1
        assert attempt["pid"] in workers and attempt["worker"] == workers[attempt["pid"]]
        assert attempt["worker_id"] == f"{attempt['host']}:{attempt['pid']}"
        assert _when(attempt["started_at"]) <= _when(attempt["ended_at"])
        assert attempt["duration_s"] == pytest.approx(
            (_when(attempt["ended_at"]) - _when(attempt["started_at"])).total_seconds(),
            abs=1e-3)
        outcomes[job["id"]] = (attempt["outcome"], attempt["error"])
    assert outcomes[ok["id"]] == ("succeeded", None)
    assert outcomes[bad["id"]][0] == "failed"
    assert outcomes[bad["id"]][1]["code"] == "UPSTREAM_ERROR"
    assert outcomes[slow["id"]] == ("cancelled", None)


def test_a_job_queued_but_never_run_has_no_attempts(
    http: httpx.Client, as_owner: httpx.Client,
) -> None:
    try:
        assert http.post("/v1/admin/queues/default/pause").status_code == 200
        held = submit(as_owner, "noop", {"n": "never"})
        assert http.post(f"/v1/admin/jobs/{held['id']}/cancel").status_code == 200
    finally:
        http.post("/v1/admin/queues/default/resume")
    assert _attempts(http, held["id"]) == []


def test_a_worker_killed_mid_job_leaves_a_lost_attempt_and_another_worker_finishes(
    http: httpx.Client, stack: Stack, as_owner: httpx.Client,
) -> None:
    job = submit(as_owner, "chat", lorem_input(60, delay_ms=50))
    first = poll(lambda: _attempts(http, job["id"]), what="the job to be claimed")[0]
    victim = first["pid"]
    assert first["outcome"] is None and first["ended_at"] is None  # running
    assert stack.workers is not None and victim != stack.workers.pid  # a worker process

    os.kill(victim, signal.SIGKILL)

    done = wait_status(as_owner, job["id"], timeout_s=RECOVERY_DEADLINE_S)
    assert done["status"] == "succeeded", done
    attempts = _attempts(http, job["id"])
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "lost"), (2, "succeeded")]
    lost, won = attempts
    assert lost["pid"] == victim and won["pid"] != victim and won["host"] == lost["host"]
    assert _when(won["started_at"]) >= _when(lost["started_at"]) and won["ended_at"]
    # The replacement serves the next tests.
    poll(lambda: [pid for pid in _chat_workers(http) if pid != victim], timeout_s=60,
         what="a replacement worker process")

