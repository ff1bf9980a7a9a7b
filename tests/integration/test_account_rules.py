"""What an account's callers are told and refused: X-RateLimit-* headers on every `/v1`
answer (401 and 429 too), a disabled account's key, and CORS for browser clients."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import Stack, _start_stack

GENERAL_LIMIT = 40
AUTH_FAILURES = 25
ALLOWED_ORIGIN = "https://app.example.com"
TIERS = {
    "default": {"auth": "1000/minute", "chat": "1000/minute", "search": "1000/minute",
                "upload": "1000/minute", "general": f"{GENERAL_LIMIT}/minute"},
    "admin": {"auth": "100000/minute", "chat": "100000/minute", "search": "100000/minute",
              "upload": "100000/minute", "general": "100000/minute"},
}


@pytest.fixture(scope="module")
def rules_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                redis_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("rules"), database_url, redis_url, env={
        **RELAXED_LOGIN_ENV, "RATE_LIMIT_TIERS": orjson.dumps(TIERS).decode(),
        "AUTH_FAILURE_LIMIT_PER_ADDRESS": f"{AUTH_FAILURES}/minute",
        "ANONYMOUS_RATE_LIMIT_TIER": "default",
        "CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(rules_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rules_stack.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def user(http: httpx.Client, rules_stack: Stack) -> User:
    return new_user(http, rules_stack.headers)


def _rate_headers(response: httpx.Response) -> dict[str, int]:
    return {name: int(response.headers[f"x-ratelimit-{name}"])
            for name in ("limit", "remaining", "reset", "used")}


def test_every_answer_carries_the_four_headers_with_reset_in_epoch_seconds(
        http: httpx.Client, user: User) -> None:
    before = time.time()
    first = _rate_headers(http.get("/v1/jobs", headers=user.headers))
    second = _rate_headers(http.get("/v1/jobs", headers=user.headers))
    assert first["limit"] == second["limit"] == GENERAL_LIMIT
    assert (first["used"], first["remaining"]) == (1, GENERAL_LIMIT - 1)
    assert (second["used"], second["remaining"]) == (2, GENERAL_LIMIT - 2)
    # An epoch second within the window (one minute, plus the counter's rollover).
    assert before < first["reset"] <= before + 121
    # A 404 from the router and a 422 from a handler are counted and say so too.
    missing = http.get("/v1/no-such-route", headers=user.headers)
    assert missing.status_code == 404 and _rate_headers(missing)["used"] == 3


def test_a_401_without_credentials_carries_the_addresss_allowance(http: httpx.Client) -> None:
    response = http.get("/v1/jobs")
    assert response.status_code == 401
    headers = _rate_headers(response)
    assert headers["limit"] == GENERAL_LIMIT and headers["used"] >= 1
    assert headers["remaining"] == GENERAL_LIMIT - headers["used"]


def test_a_401_for_a_bad_key_carries_the_invalid_credential_window_then_429(
        rules_stack: Stack) -> None:
    # A client of its own (X-Forwarded-For is not trusted here, so a fresh loopback
    # source address is a fresh client).
    source = "127.0.9.9"
    with httpx.Client(base_url=rules_stack.base_url, timeout=10,
                      transport=httpx.HTTPTransport(local_address=source)) as guesser:
        answers = [guesser.get("/v1/keys/validate", headers={"X-API-Key": f"sy-guess-{n}"})
                   for n in range(AUTH_FAILURES + 1)]
    assert [a.status_code for a in answers] == [401] * AUTH_FAILURES + [429]
    used = [_rate_headers(a)["used"] for a in answers[:AUTH_FAILURES]]
    assert used == list(range(1, AUTH_FAILURES + 1))
    refused = answers[-1]
    assert _rate_headers(refused)["remaining"] == 0
    assert _rate_headers(refused)["limit"] == AUTH_FAILURES
    assert int(refused.headers["retry-after"]) >= 1


def test_a_429_carries_the_headers_of_the_window_that_refused(http: httpx.Client,
                                                              user: User) -> None:
    answers = [http.get("/v1/jobs", headers=user.headers) for _ in range(GENERAL_LIMIT + 1)]
    assert answers[-1].status_code == 429
    assert _rate_headers(answers[-1]) | {"reset": 0} == {
        "limit": GENERAL_LIMIT, "remaining": 0, "used": GENERAL_LIMIT, "reset": 0}
    assert int(answers[-1].headers["retry-after"]) >= 1
    # The OpenAI-shaped routes say it in OpenAI's shape, with the same headers.
    openai = http.get("/v1/models", headers=user.headers)
    assert openai.status_code == 429 and _rate_headers(openai)["remaining"] == 0
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_disabled_accounts_key_gets_403_account_disabled_in_each_format(
        http: httpx.Client, rules_stack: Stack) -> None:
    owner = new_user(http, rules_stack.headers)
    assert http.get("/v1/keys/validate", headers=owner.headers).status_code == 200
    assert http.post(f"/v1/admin/users/{owner.id}/deactivate",
                     headers=rules_stack.headers).status_code == 200
    own = http.get("/v1/jobs", headers=owner.headers)
    assert own.status_code == 403
    assert own.json()["error"]["code"] == "ACCOUNT_DISABLED"
    assert "x-ratelimit-limit" in own.headers
    openai = http.post("/v1/chat/completions", headers=owner.headers, json={
        "model": "dev/echo", "messages": [{"role": "user", "content": "hi"}]})
    assert openai.status_code == 403
    assert openai.json()["error"]["code"] == "account_disabled"
    assert openai.json()["error"]["type"] == "permission_error"
    anthropic = http.post("/v1/messages", headers=owner.headers, json={
        "model": "dev/echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert anthropic.status_code == 403
    assert anthropic.json()["error"]["type"] == "permission_error"
    # Re-enabled, the same key works again at once.
    http.patch(f"/v1/admin/users/{owner.id}", headers=rules_stack.headers,
               json={"is_active": True})
    assert http.get("/v1/keys/validate", headers=owner.headers).status_code == 200
    # A key that never existed is still a 401, not a 403.
    assert http.get("/v1/jobs", headers={"X-API-Key": "sy-unknown"}).status_code == 401


def test_a_browser_preflight_from_an_allowed_origin_is_answered_without_credentials(
        http: httpx.Client, user: User) -> None:
    # What a browser sends before a cross-origin POST with Authorization and JSON.
    preflight = http.options("/v1/chat/completions", headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    # Credentials are off by default: the browser must not send cookies along.
    assert "access-control-allow-credentials" not in preflight.headers
    # The actual request then carries the origin and exposes the rate-limit headers.
    actual = http.get("/v1/jobs", headers={**user.headers, "Origin": ALLOWED_ORIGIN})
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = actual.headers["access-control-expose-headers"].lower()
    assert "x-ratelimit-remaining" in exposed and "x-request-id" in exposed


def test_a_preflight_from_another_origin_is_refused(http: httpx.Client) -> None:
    preflight = http.options("/v1/jobs", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    actual = http.get("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in actual.headers


def test_without_allowed_origins_there_are_no_cors_headers(
        http: httpx.Client, tmp_path_factory: pytest.TempPathFactory, database_url: str,
        redis_url: str) -> None:
    stack = _start_stack(tmp_path_factory.mktemp("nocors"), database_url, redis_url,
                         env=RELAXED_LOGIN_ENV)
    try:
        preflight = httpx.options(stack.base_url + "/v1/jobs", headers={
            "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code in (401, 405)
    finally:
        stack.stop()


def test_a_wildcard_origin_with_credentials_is_refused_at_start_up() -> None:
    from pydantic import ValidationError

    from schemas.settings import Settings

    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(cors_allowed_origins=["*"], cors_allow_credentials=True)
    assert Settings(cors_allowed_origins="https://a.example, https://b.example"
                    ).cors_allowed_origins == ["https://a.example", "https://b.example"]
