"""Passkeys end to end (STING's four WebAuthn routes) with a software ES256 authenticator:
register several, log in with each (the same session as a password login), and the
refusals: a replayed challenge, a wrong origin, a cloned authenticator (counter did not
grow), a removed passkey, and one registered by another user."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, bearer, login, new_user
from tests.integration.conftest import Stack, _start_stack
from tests.integration.soft_webauthn import SoftAuthenticator

RP_ID = "app.example.com"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def passkey_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                  redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("passkeys"), database_url, redis_url, env={
        **RELAXED_LOGIN_ENV, "WEBAUTHN_RP_ID": RP_ID, "WEBAUTHN_ORIGINS": ORIGIN})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(passkey_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=passkey_stack.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def user(http: httpx.Client, passkey_stack: Stack) -> User:
    return new_user(http, passkey_stack.headers)


def _register(http: httpx.Client, headers: dict[str, str], name: str,
              device: SoftAuthenticator | None = None) -> SoftAuthenticator:
    device = device or SoftAuthenticator(RP_ID)
    init = http.post("/v1/auth/webauthn/register/init", headers=headers, json={"name": name})
    assert init.status_code == 200, init.text
    options = init.json()["options"]
    assert options["rp"]["id"] == RP_ID and options["challenge"]
    done = http.post("/v1/auth/webauthn/register/complete", headers=headers, json={
        "credential": device.create(options, ORIGIN), "name": name})
    assert done.status_code == 201, done.text
    assert done.json()["id"] == device.id and done.json()["name"] == name
    return device


def _login_options(http: httpx.Client, email: str | None = None) -> dict[str, object]:
    init = http.post("/v1/auth/webauthn/login/init", json={"email": email} if email else {})
    assert init.status_code == 200, init.text
    return init.json()["options"]  # type: ignore[no-any-return]


def _complete(http: httpx.Client, assertion: dict[str, object]) -> httpx.Response:
    return http.post("/v1/auth/webauthn/login/complete", json={"assertion": assertion})


def test_a_user_registers_two_passkeys_and_logs_in_with_each(http: httpx.Client,
                                                              user: User) -> None:
    session = bearer(login(http, user.email))
    laptop = _register(http, session, "laptop")
    phone = _register(http, session, "phone")
    listed = http.get("/v1/auth/webauthn/credentials", headers=session).json()["data"]
    assert [(c["id"], c["name"]) for c in listed] == [(laptop.id, "laptop"), (phone.id, "phone")]
    for device in (laptop, phone):
        options = _login_options(http, user.email)
        assert {c["id"] for c in options["allowCredentials"]} == {laptop.id, phone.id}  # type: ignore[index,union-attr]
        answer = _complete(http, device.get(options, ORIGIN))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # The same answer as a password login: a session token for this user.
        assert body["token_type"] == "bearer" and body["user"]["id"] == user.id
        me = http.get("/v1/auth/session", headers=bearer(body["access_token"])).json()
        assert me["via"] == "session" and me["user"]["id"] == user.id
    # Discoverable login (no email) works as well.
    assert _complete(http, laptop.get(_login_options(http), ORIGIN)).status_code == 200
    counts = {c["id"]: c["sign_count"]
              for c in http.get("/v1/auth/webauthn/credentials", headers=session).json()["data"]}
    assert counts == {laptop.id: laptop.sign_count, phone.id: phone.sign_count}


def test_a_challenge_answers_once(http: httpx.Client, user: User) -> None:
    device = _register(http, user.headers, "key")
    assertion = device.get(_login_options(http), ORIGIN)
    assert _complete(http, assertion).status_code == 200
    replayed = _complete(http, assertion)
    assert replayed.status_code == 401
    assert replayed.json()["error"]["code"] == "INVALID_CREDENTIALS"
    # A registration challenge is single-use too.
    init = http.post("/v1/auth/webauthn/register/init", headers=user.headers, json={})
    credential = SoftAuthenticator(RP_ID).create(init.json()["options"], ORIGIN)
    first = http.post("/v1/auth/webauthn/register/complete", headers=user.headers,
                      json={"credential": credential})
    assert first.status_code == 201
    again = http.post("/v1/auth/webauthn/register/complete", headers=user.headers,
                      json={"credential": credential})
    assert again.status_code == 422 and again.json()["error"]["code"] == "PASSKEY_REJECTED"


def test_a_wrong_origin_or_rp_id_is_refused(http: httpx.Client, user: User) -> None:
    device = _register(http, user.headers, "key")
    wrong_origin = _complete(http, device.get(_login_options(http), "https://evil.example"))
    assert wrong_origin.status_code == 401
    options = _login_options(http)
    options["rpId"] = "evil.example"
    assert _complete(http, device.get(options, ORIGIN)).status_code == 401
    # Registering from another origin is refused as well.
    init = http.post("/v1/auth/webauthn/register/init", headers=user.headers, json={})
    refused = http.post("/v1/auth/webauthn/register/complete", headers=user.headers, json={
        "credential": SoftAuthenticator(RP_ID).create(init.json()["options"],
                                                      "https://evil.example")})
    assert refused.status_code == 422
    # And the honest device still works.
    assert _complete(http, device.get(_login_options(http), ORIGIN)).status_code == 200


def test_a_cloned_authenticator_is_refused(http: httpx.Client, user: User) -> None:
    device = _register(http, user.headers, "key")
    clone = device.clone()
    assert _complete(http, device.get(_login_options(http), ORIGIN)).status_code == 200
    # The clone signs with the same key, but its counter did not move past the original's.
    cloned = _complete(http, clone.get(_login_options(http), ORIGIN))
    assert cloned.status_code == 401
    assert "sign count" in cloned.json()["error"]["message"].lower()
    stale = _complete(http, device.get(_login_options(http), ORIGIN, advance=False))
    assert stale.status_code == 401


def test_a_removed_passkey_no_longer_logs_in(http: httpx.Client, user: User,
                                             passkey_stack: Stack) -> None:
    device = _register(http, user.headers, "old")
    other = new_user(http, passkey_stack.headers)
    # Someone else cannot remove it (404, as for any resource not theirs).
    assert http.delete(f"/v1/auth/webauthn/credentials/{device.id}",
                       headers=other.headers).status_code == 404
    assert http.delete(f"/v1/auth/webauthn/credentials/{device.id}",
                       headers=user.headers).status_code == 204
    assert http.get("/v1/auth/webauthn/credentials", headers=user.headers).json()["data"] == []
    assert _complete(http, device.get(_login_options(http), ORIGIN)).status_code == 401
    assert http.delete(f"/v1/auth/webauthn/credentials/{device.id}",
                       headers=user.headers).status_code == 404


def test_a_disabled_accounts_passkey_does_not_log_in(http: httpx.Client, user: User,
                                                     passkey_stack: Stack) -> None:
    device = _register(http, user.headers, "key")
    http.post(f"/v1/admin/users/{user.id}/deactivate", headers=passkey_stack.headers)
    assert _complete(http, device.get(_login_options(http), ORIGIN)).status_code == 401


def test_registering_needs_a_signed_in_user(http: httpx.Client) -> None:
    assert http.post("/v1/auth/webauthn/register/init", json={}).status_code == 401
    garbage = http.post("/v1/auth/webauthn/login/complete", json={"assertion": {"id": "x"}})
    assert garbage.status_code == 401
