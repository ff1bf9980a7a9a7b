"""Key scopes over every route of the app (enumerated, not listed by hand): a key without
the route's scope gets 403 PERMISSION_DENIED in the route's own error shape; a key with it
gets past the check; a key's scopes never exceed its owner's rights."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from api.app import create_app
from api.errors import wire_format
from api.scopes import ANY, KNOWLEDGE_READ, KNOWLEDGE_WRITE, ROUTE_SCOPES, SCOPES, route_keys
from schemas.settings import Settings
from tests.integration.accounts import RELAXED_LOGIN_ENV, User, create_key, new_user
from tests.integration.conftest import Stack, _start_stack

_PUBLIC = {("POST", "/v1/auth/login"), ("POST", "/v1/auth/webauthn/login/init"),
           ("POST", "/v1/auth/webauthn/login/complete")}


# Fixed, so that every pytest-xdist worker collects the same test ids.
UNKNOWN_ID = "6f1d0c52-93a4-4b7e-8c1a-0000000000a4"


def _routes() -> list[tuple[str, str, str]]:
    """(method, concrete path, scope) for every /v1 route the app serves."""
    app = create_app(Settings(switchyard_env="development", log_json=False))
    rows = []
    for route in app.routes:
        for method, path in route_keys(route):
            if not path.startswith("/v1") or (method, path) in _PUBLIC:
                continue
            concrete = path.replace("{}", UNKNOWN_ID)
            rows.append((method, concrete, ROUTE_SCOPES.get((method, path), "<undeclared>")))
    return rows


ROUTES = _routes()


def _other_scope(needed: str) -> str:
    """A scope that does not admit `needed`."""
    excluded = {needed, KNOWLEDGE_WRITE} if needed == KNOWLEDGE_READ else {needed}
    return next(s for s in SCOPES if s not in excluded)


@pytest.fixture(scope="module")
def scopes_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                 redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("scopes"), database_url, redis_url,
                         env=RELAXED_LOGIN_ENV)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(scopes_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scopes_stack.base_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def admin(http: httpx.Client, scopes_stack: Stack) -> User:
    """An admin account, so the only refusal a route can give is the key's scope."""
    return new_user(http, scopes_stack.headers, role="admin", tier="admin")


@pytest.fixture(scope="module")
def scoped_keys(http: httpx.Client, admin: User) -> dict[str, str]:
    return {scope: create_key(http, admin.headers, name=f"only-{scope}",
                              scopes=[scope])["key"] for scope in SCOPES}


def _call(http: httpx.Client, method: str, path: str, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if method == "GET" and (path.endswith("/events") or path == "/v1/admin/live"):
        with http.stream("GET", path, headers=headers) as response:
            response.read() if response.status_code != 200 else None
            return response
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return http.request(method, path, headers=headers, json=body)


def _permission_denied(response: httpx.Response, path: str) -> bool:
    if response.status_code != 403:
        return False
    body = response.json()
    fmt = wire_format(path)
    if fmt == "openai":
        return bool(body["error"]["code"] == "permission_denied"
                    and body["error"]["type"] == "permission_error")
    if fmt == "anthropic":
        return bool(body["type"] == "error" and body["error"]["type"] == "permission_error")
    return bool(body["error"]["code"] == "PERMISSION_DENIED")


@pytest.mark.parametrize(("method", "path", "needed"),
                         [r for r in ROUTES if r[0] != "WS"],
                         ids=[f"{m} {p.split('/v1')[1]}" for m, p, _ in ROUTES if m != "WS"])
def test_each_route_admits_only_keys_with_its_scope(
        http: httpx.Client, scoped_keys: dict[str, str], method: str, path: str,
        needed: str) -> None:
    assert needed != "<undeclared>", f"{method} {path} has no scope in api/scopes.py"
    if needed == ANY:
        for key in scoped_keys.values():
            assert not _permission_denied(_call(http, method, path, key), path)
        return
    refused = _call(http, method, path, scoped_keys[_other_scope(needed)])
    assert _permission_denied(refused, path), (refused.status_code, refused.text)
    admitted = _call(http, method, path, scoped_keys[needed])
    assert not _permission_denied(admitted, path), (admitted.status_code, admitted.text)


@pytest.mark.parametrize(("method", "path", "needed"), [r for r in ROUTES if r[0] == "WS"])
def test_each_websocket_refuses_a_key_without_its_scope(
        scopes_stack: Stack, scoped_keys: dict[str, str], method: str, path: str,
        needed: str) -> None:
    url = scopes_stack.base_url.replace("http://", "ws://") + path
    headers = {"Authorization": f"Bearer {scoped_keys[_other_scope(needed)]}"}
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        with ws_connect(url, additional_headers=headers, open_timeout=5):
            pass
    assert refused.value.response.status_code == 403


def test_the_chat_websocket_admits_a_chat_key(scopes_stack: Stack,
                                              scoped_keys: dict[str, str]) -> None:
    url = scopes_stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {scoped_keys['chat']}"},
                    open_timeout=5) as socket:
        socket.close()


def test_an_admin_scope_does_not_make_a_user_an_admin(http: httpx.Client,
                                                      scopes_stack: Stack) -> None:
    user = new_user(http, scopes_stack.headers)
    key = create_key(http, user.headers, name="wishful", scopes=["admin"])["key"]
    response = http.get("/v1/admin/users", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403


def test_a_scoped_key_cannot_mint_a_wider_key(http: httpx.Client, admin: User) -> None:
    narrow = create_key(http, admin.headers, name="narrow",
                        scopes=["account", "knowledge:write"])["key"]
    headers = {"Authorization": f"Bearer {narrow}"}
    wider = http.post("/v1/keys", headers=headers, json={"name": "w", "scopes": ["chat"]})
    assert wider.status_code == 403
    assert wider.json()["error"]["code"] == "PERMISSION_DENIED"
    # Asking for no scopes gets the creator's scopes, not its owner's full rights.
    inherited = http.post("/v1/keys", headers=headers, json={"name": "same"})
    assert inherited.status_code == 201
    assert sorted(inherited.json()["scopes"]) == ["account", "knowledge:write"]
    # Narrower (implied) is fine.
    assert http.post("/v1/keys", headers=headers, json={
        "name": "r", "scopes": ["knowledge:read"]}).status_code == 201
    unknown = http.post("/v1/keys", headers=admin.headers, json={"name": "x",
                                                                  "scopes": ["everything"]})
    assert unknown.status_code == 422


def test_an_unscoped_key_and_a_session_keep_the_owners_rights(http: httpx.Client,
                                                              admin: User) -> None:
    assert http.get("/v1/admin/users", headers=admin.headers).status_code == 200
    assert http.get("/v1/jobs", headers=admin.headers).status_code == 200
