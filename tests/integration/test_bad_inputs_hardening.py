"""Bad inputs that used to be accepted and then broke the service (issue 14): JSON too deep
or with numbers beyond 64 bits, ids in other UUID spellings, NUL in URLs, instants past
year 9999. Each is refused with a 4xx in the route's own error format before anything is
written, or (ids) read the same as the canonical spelling. And an error nobody expected is
a JSON 500 that leaves the connection usable.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, insert

from pipelines.db.engine import sync_url
from pipelines.db.tables import jobs as jobs_table
from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import wait_status

HARDENING_ENV = {**RELAXED_LOGIN_ENV, "DEV_MODELS_ENABLED": "true",
                 "EMBEDDING_PROVIDER": "hash"}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = {"a": value}
    return value


DEEP = _nested(300)
HUGE = 2**200
NUL = "a\x00b"


@pytest.fixture(scope="module")
def hstack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
           redis_url: str) -> Iterator[Stack]:
    files: Path = tmp_path_factory.mktemp("files")
    stack = _start_stack(tmp_path_factory.mktemp("hardening"), database_url, redis_url,
                         env={**HARDENING_ENV, "FILE_STORE_DIR": str(files)})
    yield stack
    stack.stop()


@pytest.fixture
def admin(hstack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hstack.base_url, headers=hstack.headers, timeout=30) as client:
        yield client


@pytest.fixture
def user(hstack: Stack, admin: httpx.Client) -> User:
    """A fresh user, so 'nothing was written' is an empty job list."""
    return new_user(admin, hstack.headers, tier="admin")


@pytest.fixture
def http(hstack: Stack, user: User) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hstack.base_url, headers=user.headers, timeout=30) as client:
        yield client


def _post_json(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    # json.dumps: it writes 2**200 as an integer and nests as deep as asked.
    return http.post(path, content=json.dumps(body),
                     headers={"Content-Type": "application/json"})


def _own_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    return error


def _anthropic_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["error"]["type"] == type_, body
    return body["error"]  # type: ignore[no-any-return]


def _no_jobs(http: httpx.Client) -> None:
    listed = http.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


# --- JSON the service cannot store or send back --------------------------------------------

HOSTILE = {"deep": (DEEP, "nested more than 64 levels"),
           "huge integer": (HUGE, "64-bit integer range"),
           "huge float": (1e300, "64-bit integer range")}


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_job_input_too_deep_or_too_large_is_refused_before_it_is_stored(
    http: httpx.Client, hostile: str,
) -> None:
    value, message = HOSTILE[hostile]
    response = _post_json(http, "/v1/jobs", {"kind": "noop", "input": {"x": value}})
    error = _own_error(response, 422, "VALIDATION_FAILED")
    assert message in error["message"]
    _no_jobs(http)


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_chat_message_extra_field_is_refused_in_openais_format(
    http: httpx.Client, hostile: str,
) -> None:
    value, message = HOSTILE[hostile]
    response = _post_json(http, "/v1/chat/completions", {
        "model": "dev/echo", "messages": [{"role": "user", "content": "hi", "extra": value}]})
    assert message in _openai_error(response, 422)["message"]
    _no_jobs(http)


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_messages_tool_schema_is_refused_in_anthropics_format(
    http: httpx.Client, hostile: str,
) -> None:
    value, message = HOSTILE[hostile]
    response = _post_json(http, "/v1/messages", {
        "model": "dev/echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "t", "input_schema": {"type": "object", "x": value}}]})
    assert message in _anthropic_error(response, 422, "invalid_request_error")["message"]
    _no_jobs(http)


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_upload_metadata_is_refused_before_the_file_is_stored(
    http: httpx.Client, hostile: str,
) -> None:
    base = http.post("/v1/knowledge", json={"name": "kb"}).json()
    value, message = HOSTILE[hostile]
    response = http.post(f"/v1/knowledge/{base['id']}/documents",
                         data={"metadata": json.dumps({"x": value})},
                         files={"file": ("a.txt", b"alpha", "text/plain")})
    error = _own_error(response, 422, "VALIDATION_FAILED")
    assert message in error["message"] and error["message"].startswith("metadata")
    documents = http.get(f"/v1/knowledge/{base['id']}/documents")
    assert documents.status_code == 200 and documents.json()["total"] == 0
    _no_jobs(http)


def test_values_at_the_bounds_are_stored_listed_and_echoed_by_the_worker(
    http: httpx.Client,
) -> None:
    # The body and `input` are two of the 64 levels.
    edge = {"deep": _nested(62), "max": 2**64 - 1, "min": -(2**63), "big_float": 1e19}
    response = _post_json(http, "/v1/jobs", {"kind": "noop", "input": edge})
    assert response.status_code == 202, response.text
    job = wait_status(http, response.json()["id"], ["succeeded"])
    assert job["input"]["min"] == -(2**63) and job["result"]["echo"]["max"] == 2**64 - 1
    listed = http.get("/v1/jobs", params={"kind": "noop"})
    assert listed.status_code == 200, listed.text
    assert [j["id"] for j in listed.json()["data"]] == [job["id"]]


# --- ids in every spelling Python's uuid reads ---------------------------------------------

# Fixed, so that every pytest-xdist worker collects the same test ids.
UNKNOWN = "6f1d0c52-93a4-4b7e-8c1a-0000000000a1"
SPELLINGS = {"braces": "{%s}", "urn": "urn:uuid:%s"}
USER_ID_ROUTES = [
    ("GET", "/v1/jobs/{}"), ("POST", "/v1/jobs/{}/cancel"), ("POST", "/v1/jobs/{}/retry"),
    ("GET", "/v1/jobs/{}/events"),
    ("GET", "/v1/knowledge/{}"), ("PATCH", "/v1/knowledge/{}"), ("DELETE", "/v1/knowledge/{}"),
    ("GET", "/v1/knowledge/{}/documents"), ("POST", "/v1/knowledge/{}/documents"),
    ("GET", "/v1/documents/{}"), ("DELETE", "/v1/documents/{}"),
    ("POST", "/v1/documents/{}/reingest"),
    ("GET", "/v1/conversations/{}"), ("PATCH", "/v1/conversations/{}"),
    ("DELETE", "/v1/conversations/{}"), ("POST", "/v1/conversations/{}/messages"),
    ("GET", "/v1/conversations/{}/token-usage"), ("POST", "/v1/conversations/{}/prune"),
    ("DELETE", "/v1/keys/{}"),
]
ADMIN_ID_ROUTES = [
    ("POST", "/v1/admin/jobs/{}/cancel"), ("POST", "/v1/admin/jobs/{}/retry"),
    ("GET", "/v1/admin/users/{}"), ("PATCH", "/v1/admin/users/{}"),
    ("POST", "/v1/admin/users/{}/deactivate"),
]


def _id_path(template: str, spelling: str, id_: str) -> str:
    return template.format(quote(SPELLINGS[spelling] % id_, safe=""))


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_an_unknown_id_in_any_spelling_is_a_404_on_every_id_route(
    http: httpx.Client, admin: httpx.Client, spelling: str,
) -> None:
    answers = []
    for client, routes in ((http, USER_ID_ROUTES), (admin, ADMIN_ID_ROUTES)):
        for method, template in routes:
            body = {"content": "hi"} if template.endswith("/messages") else {}
            response = client.request(method, _id_path(template, spelling, UNKNOWN), json=body)
            answers.append((method, template, response.status_code,
                            response.json()["error"].get("code")))
    assert all(answer[2:] == (404, "RESOURCE_NOT_FOUND") for answer in answers), [
        answer for answer in answers if answer[2:] != (404, "RESOURCE_NOT_FOUND")]


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_an_existing_resource_reads_and_changes_the_same_by_any_spelling_of_its_id(
    http: httpx.Client, user: User, hstack: Stack, spelling: str,
) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop"}).json()
    got = http.get(_id_path("/v1/jobs/{}", spelling, job["id"]))
    assert got.status_code == 200 and got.json()["id"] == job["id"], got.text

    base = http.post("/v1/knowledge", json={"name": "before"}).json()
    renamed = http.patch(_id_path("/v1/knowledge/{}", spelling, base["id"]),
                         json={"name": "after"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "after", renamed.text

    conversation = http.post("/v1/conversations", json={"model": "dev/echo"}).json()
    titled = http.patch(_id_path("/v1/conversations/{}", spelling, conversation["id"]),
                        json={"title": "t"})
    assert titled.status_code == 200 and titled.json()["id"] == conversation["id"], titled.text

    key = http.post("/v1/keys", json={"name": "spare"}).json()
    revoked = http.delete(_id_path("/v1/keys/{}", spelling, key["id"]))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_ids_in_bodies_are_read_in_any_spelling(http: httpx.Client, spelling: str) -> None:
    base = http.post("/v1/knowledge", json={"name": "kb"}).json()
    search = http.post("/v1/knowledge/search", json={
        "query": "alpha", "knowledge_ids": [SPELLINGS[spelling] % base["id"]],
        "filters": {"document_ids": [SPELLINGS[spelling] % UNKNOWN]}})
    assert search.status_code == 200 and search.json()["results"] == [], search.text

    conversation = http.post("/v1/conversations", json={"model": "dev/echo"}).json()
    chat = http.post("/v1/chat/completions", json={
        "model": "dev/echo", "messages": [{"role": "user", "content": "hello"}],
        "conversation_id": SPELLINGS[spelling] % conversation["id"]})
    assert chat.status_code == 200, chat.text
    stored = http.get(f"/v1/conversations/{conversation['id']}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]


def test_an_unknown_id_in_a_body_is_still_a_404(http: httpx.Client) -> None:
    search = http.post("/v1/knowledge/search", json={
        "query": "alpha", "knowledge_ids": [SPELLINGS["braces"] % UNKNOWN]})
    error = _own_error(search, 404, "RESOURCE_NOT_FOUND")
    assert error["details"] == {"knowledge_ids": [UNKNOWN]}


# --- NUL in the URL, instants past year 9999, forged cursors -------------------------------

def test_a_model_path_with_nul_is_a_404_in_each_routes_format(
    http: httpx.Client, admin: httpx.Client,
) -> None:
    openai = http.get("/v1/models/%00")
    assert openai.status_code == 404 and openai.json()["error"]["message"], openai.text
    _own_error(admin.get("/v1/admin/models/%00"), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(("path", "param"), [
    ("/v1/jobs?kind=%00", "kind"), ("/v1/knowledge?tag=a%00", "tag"),
    ("/v1/knowledge?search=%00", "search"), ("/v1/admin/usage?owner_id=%00", "owner_id"),
    ("/v1/admin/jobs?kind=%00", "kind"),
])
def test_a_query_parameter_with_nul_is_a_422_naming_it(
    admin: httpx.Client, path: str, param: str,
) -> None:
    error = _own_error(admin.get(path), 422, "VALIDATION_FAILED")
    assert param in error["message"]


@pytest.mark.parametrize(("query", "param"), [
    ({"from": "9999-12-31T23:59:59-23:59"}, "from"),
    ({"from": "0001-01-01T00:00:00+23:59"}, "from"),
    ({"to": "9999-12-31"}, "to"),
])
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/admin/usage"])
def test_a_usage_bound_past_year_9999_in_utc_is_a_422(
    admin: httpx.Client, path: str, query: dict[str, str], param: str,
) -> None:
    error = _own_error(admin.get(path, params=query), 422, "VALIDATION_FAILED")
    assert param in error["message"]


def test_a_key_expiring_past_year_9999_in_utc_is_a_422(http: httpx.Client) -> None:
    response = http.post("/v1/keys", json={"name": "k",
                                           "expires_at": "9999-12-31T23:59:59-23:59"})
    _own_error(response, 422, "VALIDATION_FAILED")


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    f"9999-12-31T23:59:59-23:59|{UNKNOWN}", f"2030-01-01T00:00:00|{UNKNOWN}",
])
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/admin/jobs"])
def test_a_forged_job_cursor_is_a_422(admin: httpx.Client, path: str, cursor: str) -> None:
    _own_error(admin.get(path, params={"cursor": _cursor(cursor)}), 422, "VALIDATION_FAILED")


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/admin/jobs"])
def test_a_cursor_with_another_spelling_of_its_job_id_pages_as_usual(
    admin: httpx.Client, path: str,
) -> None:
    cursor = _cursor(f"2000-01-01T00:00:00+00:00|{{{UNKNOWN}}}")
    response = admin.get(path, params={"cursor": cursor})
    assert response.status_code == 200 and response.json()["data"] == [], response.text


# --- an error nobody expected ---------------------------------------------------------------

def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_usable(
    hstack: Stack, user: User, database_url: str,
) -> None:
    # A row stored before the edge refused such input: reading it cannot be serialised.
    job_id = str(uuid.uuid4())
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            # Finished, so no sweeper of a later test picks it up and runs it.
            conn.execute(insert(jobs_table).values(
                id=job_id, kind="noop", owner_id=user.id, input={"x": DEEP}, status="failed"))
    finally:
        engine.dispose()
    address = urlsplit(hstack.base_url)
    client = HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        client.request("GET", f"/v1/jobs/{job_id}", headers=user.headers)
        first = client.getresponse()
        body = json.loads(first.read())
        socket_used = client.sock
        # Before: uvicorn closed the connection after the 500, so this failed with a reset.
        client.request("GET", "/v1/jobs?limit=abc", headers=user.headers)
        second = client.getresponse()
        second.read()
        assert socket_used is not None and client.sock is socket_used
    finally:
        client.close()
    assert first.status == 500
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert body["error"]["request_id"] == first.getheader("x-request-id")
    assert second.status == 422
