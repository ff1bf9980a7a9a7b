"""Accounts end to end: sessions, API keys, revocation, deactivation, header forms,
registration, and admin-only routes — against a real uvicorn on real Postgres and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from pipelines import accounts
from tests.integration.accounts import (
    PASSWORD,
    RELAXED_LOGIN_ENV,
    bearer,
    create_key,
    create_user,
    login,
    new_user,
    unique_email,
)
from tests.integration.conftest import Stack, StartStack, _start_stack

SECRET = "integration-secret-key-0123456789abcdef"


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
               redis_url: str) -> Iterator[Stack]:
    """A stack with a known signing key, so tests can mint tokens of their own."""
    stack = _start_stack(tmp_path_factory.mktemp("auth"), database_url, redis_url,
                         env={"SWITCHYARD_SECRET_KEY": SECRET, **RELAXED_LOGIN_ENV})
    yield stack
    stack.stop()


@pytest.fixture
def client(auth_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_stack.base_url, timeout=10) as http:
        yield http


def test_login_gives_a_token_that_works_until_logout(client: httpx.Client,
                                                       auth_stack: Stack) -> None:
    user = create_user(client, auth_stack.headers)
    response = client.post("/v1/auth/login", json={"email": user["email"].upper(),
                                                   "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert body["user"]["id"] == user["id"] and "password_hash" not in body["user"]
    token = body["access_token"]
    session = client.get("/v1/auth/session", headers=bearer(token)).json()
    assert session == {"authenticated": True, "role": "user", "permissions": [],
                       "user": session["user"], "via": "session", "key_id": None, "scopes": []}
    assert session["user"]["email"] == user["email"]
    assert client.post("/v1/auth/logout", headers=bearer(token)).json() == {"revoked": True}
    after = client.get("/v1/auth/session", headers=bearer(token))
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "INVALID_CREDENTIALS"


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    client: httpx.Client, auth_stack: Stack
) -> None:
    user = create_user(client, auth_stack.headers)
    wrong = client.post("/v1/auth/login", json={"email": user["email"], "password": "nope"})
    unknown = client.post("/v1/auth/login", json={"email": unique_email(),
                                                  "password": PASSWORD})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_CREDENTIALS"
        assert response.json()["error"]["message"] == wrong.json()["error"]["message"]


def test_keys_are_shown_once_listed_by_prefix_validated_and_revoked(
    client: httpx.Client, auth_stack: Stack
) -> None:
    user = new_user(client, auth_stack.headers)
    created = create_key(client, user.headers, name="ci", scopes=["jobs"])
    assert created["key"].startswith("sy-") and created["prefix"] == created["key"][:10]
    listed = client.get("/v1/keys", headers=user.headers).json()["data"]
    assert {k["id"] for k in listed} == {user.key_id, created["id"]}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert created["key"] not in str(listed)

    for headers in ({"Authorization": f"Bearer {created['key']}"},
                    {"X-API-Key": created["key"]}, {"x-api-key": created["key"]}):
        validation = client.get("/v1/keys/validate", headers=headers)
        assert validation.status_code == 200
        assert validation.json() == {"valid": True, "user_id": user.id, "role": "user",
                                     "key_id": created["id"], "scopes": ["jobs"]}

    revoked = client.delete(f"/v1/keys/{created['id']}", headers=user.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = client.get("/v1/keys/validate", headers={"X-API-Key": created["key"]})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "INVALID_CREDENTIALS"
    assert client.delete(f"/v1/keys/{created['id']}", headers=user.headers).status_code == 404
    assert client.get("/v1/keys/validate", headers=user.headers).status_code == 200


def test_an_expired_key_stops_working(client: httpx.Client, auth_stack: Stack) -> None:
    user = new_user(client, auth_stack.headers)
    expires_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    key = create_key(client, user.headers, expires_at=expires_at)["key"]
    assert client.get("/v1/keys/validate", headers=bearer(key)).status_code == 200
    time.sleep(2.5)
    assert client.get("/v1/keys/validate", headers=bearer(key)).status_code == 401


def test_expired_forged_and_unknown_session_tokens_are_refused(
    client: httpx.Client, auth_stack: Stack
) -> None:
    user = create_user(client, auth_stack.headers)
    expired = accounts.issue_token(user["id"], SECRET, ttl_s=60,
                                   now=datetime.now(UTC) - timedelta(hours=1)).token
    forged = accounts.issue_token(user["id"], "not-the-secret-key-0123456789abcdef", 60).token
    # Correctly signed and unexpired, but no session row: never issued by login.
    unissued = accounts.issue_token(user["id"], SECRET, 60).token
    for token in (expired, forged, unissued, "not-a-jwt"):
        response = client.get("/v1/auth/session", headers=bearer(token))
        assert response.status_code == 401, token
        assert token not in response.text


def test_a_session_token_resigned_with_a_far_expiry_is_refused(
    client: httpx.Client, auth_stack: Stack
) -> None:
    user = create_user(client, auth_stack.headers)
    token = login(client, user["email"])
    assert client.get("/v1/auth/session", headers=bearer(token)).status_code == 200
    # Same session (its row is live), same key, but an `exp` ten years out: login never
    # issues that, so the token is forged even though its signature checks out.
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="switchyard")
    claims["exp"] = int(time.time()) + 10 * 365 * 86_400
    forged = jwt.encode(claims, SECRET, algorithm="HS256")
    assert client.get("/v1/auth/session", headers=bearer(forged)).status_code == 401


def test_a_deactivated_users_keys_and_sessions_stop_at_once(
    client: httpx.Client, auth_stack: Stack
) -> None:
    user = new_user(client, auth_stack.headers)
    token = login(client, user.email)
    # Warm the in-process credential cache first: deactivation must still win.
    for _ in range(3):
        assert client.get("/v1/keys/validate", headers=user.headers).status_code == 200
        assert client.get("/v1/auth/session", headers=bearer(token)).status_code == 200
    response = client.post(f"/v1/admin/users/{user.id}/deactivate",
                           headers=auth_stack.headers)
    assert response.status_code == 200 and response.json()["is_active"] is False
    # The key is right but the account is off: 403 account_disabled (Stack 2.9's code).
    disabled = client.get("/v1/keys/validate", headers=user.headers)
    assert disabled.status_code == 403
    assert disabled.json()["error"]["code"] == "ACCOUNT_DISABLED"
    assert client.get("/v1/auth/session", headers=bearer(token)).status_code == 401
    relogin = client.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert relogin.status_code == 401
    # Reactivation restores keys, but sessions revoked by deactivation stay revoked.
    client.patch(f"/v1/admin/users/{user.id}", headers=auth_stack.headers,
                 json={"is_active": True})
    assert client.get("/v1/keys/validate", headers=user.headers).status_code == 200
    assert client.get("/v1/auth/session", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "AUTHENTICATION_REQUIRED"),
    ({"Authorization": "Basic {key}"}, "AUTHENTICATION_REQUIRED"),
    ({"Authorization": "{key}"}, "AUTHENTICATION_REQUIRED"),
    ({"Authorization": "Bearer"}, "AUTHENTICATION_REQUIRED"),
    ({"Authorization": "Bearer {key}x"}, "INVALID_CREDENTIALS"),
    ({"X-API-Key": "Bearer {key}"}, "INVALID_CREDENTIALS"),
    ({"Authorization": "Bearer sy-not-a-real-key"}, "INVALID_CREDENTIALS"),
])
def test_wrong_header_forms_are_refused(client: httpx.Client, auth_stack: Stack,
                                        headers: dict[str, str], code: str) -> None:
    user = new_user(client, auth_stack.headers)
    sent = {name: value.format(key=user.key) for name, value in headers.items()}
    response = client.get("/v1/keys/validate", headers=sent)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"
    assert user.key not in response.text


def test_the_bearer_scheme_is_case_insensitive(client: httpx.Client, auth_stack: Stack) -> None:
    user = new_user(client, auth_stack.headers)
    response = client.get("/v1/keys/validate", headers={"Authorization": f"bearer {user.key}"})
    assert response.status_code == 200


def test_openai_routes_answer_401_in_openai_shape(client: httpx.Client) -> None:
    response = client.get("/v1/models", headers={"Authorization": "Bearer sy-wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_non_admins_get_403_on_every_admin_route(client: httpx.Client,
                                                 auth_stack: Stack) -> None:
    user = new_user(client, auth_stack.headers)
    other = create_user(client, auth_stack.headers)
    for method, path in [("GET", "/v1/admin/users"), ("POST", "/v1/admin/users"),
                         ("GET", f"/v1/admin/users/{other['id']}"),
                         ("PATCH", f"/v1/admin/users/{other['id']}"),
                         ("POST", f"/v1/admin/users/{other['id']}/deactivate"),
                         ("GET", "/v1/admin/usage"), ("GET", "/v1/system/status")]:
        response = client.request(method, path, headers=user.headers, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert client.get(f"/v1/admin/users/{other['id']}",
                      headers=auth_stack.headers).json()["is_active"] is True


def test_admins_manage_users(client: httpx.Client, auth_stack: Stack) -> None:
    email = unique_email("managed")
    user = create_user(client, auth_stack.headers, email=email)
    duplicate = client.post("/v1/admin/users", headers=auth_stack.headers,
                            json={"email": email.upper(), "password": PASSWORD})
    assert duplicate.status_code == 409
    patched = client.patch(f"/v1/admin/users/{user['id']}", headers=auth_stack.headers,
                           json={"name": "Ada", "role": "admin", "tier": "pro"})
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["role"], patched.json()["tier"]) == (
        "Ada", "admin", "pro")
    listed = client.get("/v1/admin/users", headers=auth_stack.headers,
                        params={"limit": 200}).json()
    assert user["id"] in {u["id"] for u in listed["users"]} or listed["total"] > 200
    assert client.get("/v1/admin/users/not-a-uuid",
                      headers=auth_stack.headers).status_code == 404
    assert client.get("/v1/admin/users", headers=auth_stack.headers,
                      params={"limit": "x"}).status_code == 422


def test_registration_is_admin_only_by_default(client: httpx.Client,
                                               auth_stack: Stack) -> None:
    body = {"email": unique_email("reg"), "password": PASSWORD}
    anonymous = client.post("/v1/auth/register", json=body)
    assert anonymous.status_code == 401
    user = new_user(client, auth_stack.headers)
    assert client.post("/v1/auth/register", json=body, headers=user.headers).status_code == 403
    created = client.post("/v1/auth/register", json=body, headers=auth_stack.headers)
    assert created.status_code == 201 and created.json()["role"] == "user"
    assert login(client, body["email"])


def test_open_registration_lets_anyone_register_once(start_stack: StartStack) -> None:
    stack = start_stack(env={"OPEN_REGISTRATION": "true", **RELAXED_LOGIN_ENV})
    body = {"email": unique_email("open"), "password": PASSWORD, "name": "Grace"}
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        created = http.post("/v1/auth/register", json=body)
        assert created.status_code == 201
        assert created.json()["role"] == "user" and "password" not in created.text
        assert http.post("/v1/auth/register", json=body).status_code == 409
        escalate = http.post("/v1/auth/register", json={**body, "email": unique_email(),
                                                        "role": "admin"})
        assert escalate.status_code == 422
        assert login(http, body["email"])


def test_the_bootstrap_admin_key_cannot_own_keys(client: httpx.Client,
                                                 auth_stack: Stack) -> None:
    response = client.post("/v1/keys", headers=auth_stack.headers, json={"name": "x"})
    assert response.status_code == 403
    assert client.get("/v1/keys", headers=auth_stack.headers).json() == {"data": []}


def test_secrets_never_reach_the_logs(client: httpx.Client, auth_stack: Stack) -> None:
    user = new_user(client, auth_stack.headers)
    token = login(client, user.email)
    client.get("/v1/keys/validate", headers=user.headers)
    client.get("/v1/auth/session", headers=bearer(token))
    client.get("/v1/keys/validate", headers=bearer(user.key + "x"))
    logs = auth_stack.logs()
    for secret in (user.key, token, PASSWORD, SECRET, auth_stack.admin_key):
        assert secret not in logs
