"""Rate limits shared by two API processes on one Redis: the combined allowance holds.

One stack (API + workers) plus a second uvicorn on the same database, Redis and
namespace, as two replicas behind a load balancer would be. Both trust 127.0.0.1 as a
proxy, so tests speak for distinct clients with X-Forwarded-For; a client that is not a
proxy connects from another loopback address (127.0.0.x) and its header is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import orjson
import psycopg
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from websockets.sync.client import connect

from api.devservices import free_port, spawn, web_command
from pipelines.budgets import record_tokens
from pipelines.keys import Keys
from tests.integration.accounts import PASSWORD, User, create_user, new_user
from tests.integration.conftest import PROJECT_DIR, Stack, _start_stack

GENERAL_LIMIT = 12
TIGHT_CHAT_LIMIT = 3
AUTH_FAILURE_LIMIT = 10
TIERS = {
    "default": {"auth": "100/minute", "chat": "100/minute", "search": "100/minute",
                "upload": "100/minute", "general": f"{GENERAL_LIMIT}/minute"},
    "tight": {"chat": f"{TIGHT_CHAT_LIMIT}/minute"},
    "admin": {"auth": "100000/minute", "chat": "100000/minute", "search": "100000/minute",
              "upload": "100000/minute", "general": "100000/minute"},
}
ENV = {
    "RATE_LIMIT_TIERS": orjson.dumps(TIERS).decode(),
    "LOGIN_LIMIT_PER_ACCOUNT": "3/minute",
    "LOGIN_LIMIT_PER_ADDRESS": "50/minute",
    "AUTH_FAILURE_LIMIT_PER_ADDRESS": f"{AUTH_FAILURE_LIMIT}/minute",
    "TRUSTED_PROXIES": "127.0.0.1",
    "DAILY_TOKEN_BUDGET": "100",
}


def _client_address() -> str:
    """A documentation-range address (RFC 5737) for one simulated client: a header value
    only, never contacted."""
    return f"203.0.113.{random.randint(1, 254)}"


def _as_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _from_loopback_peer(url: str) -> httpx.Client:
    """A client connecting from a fresh 127.0.0.x source address: a peer that is not a
    trusted proxy, so its X-Forwarded-For must be ignored."""
    source = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
    return httpx.Client(base_url=url, timeout=10,
                        transport=httpx.HTTPTransport(local_address=source))


def _eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `check` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@dataclass
class Replicas:
    stack: Stack
    second_url: str

    @property
    def urls(self) -> list[str]:
        return [self.stack.base_url, self.second_url]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, database_url: str,
             redis_url: str) -> Iterator[Replicas]:
    log_dir = tmp_path_factory.mktemp("limits")
    stack = _start_stack(log_dir, database_url, redis_url, env=ENV)
    port = free_port()
    second = spawn(web_command("127.0.0.1", port), log_path=log_dir / "web2.log",
                   env=stack.env, cwd=PROJECT_DIR)
    second_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(second_url)
        yield Replicas(stack, second_url)
    finally:
        second.terminate()
        second.wait(10)
        stack.stop()


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"second API process at {url} never became healthy")


@pytest.fixture
def user(replicas: Replicas) -> User:
    with httpx.Client(base_url=replicas.stack.base_url, timeout=10) as http:
        return new_user(http, replicas.stack.headers)


def test_two_replicas_share_one_allowance(replicas: Replicas, user: User) -> None:
    statuses: list[int] = []
    for url in itertools.islice(itertools.cycle(replicas.urls), GENERAL_LIMIT * 2):
        response = httpx.get(url + "/v1/jobs", headers=user.headers)
        statuses.append(response.status_code)
        assert int(response.headers["x-ratelimit-limit"]) == GENERAL_LIMIT
        assert "x-ratelimit-remaining" in response.headers
        assert "x-ratelimit-reset" in response.headers
    # Not doubled: the replicas together allow GENERAL_LIMIT, then refuse.
    assert statuses.count(200) == GENERAL_LIMIT
    assert statuses[GENERAL_LIMIT:] == [429] * GENERAL_LIMIT


def test_a_refusal_says_when_to_retry_in_the_routes_format(replicas: Replicas,
                                                           user: User) -> None:
    last = None
    for _ in range(GENERAL_LIMIT + 1):
        last = httpx.get(replicas.second_url + "/v1/jobs", headers=user.headers)
    assert last is not None and last.status_code == 429
    assert 1 <= int(last.headers["retry-after"]) <= 60
    assert last.headers["x-ratelimit-remaining"] == "0"
    assert last.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    openai = httpx.get(replicas.stack.base_url + "/v1/models", headers=user.headers)
    assert openai.status_code == 429
    assert openai.json()["error"]["type"] == "rate_limit_error"
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    # Another route group has its own allowance.
    assert httpx.get(replicas.stack.base_url + "/v1/keys/validate",
                     headers=user.headers).status_code == 200


def test_each_key_has_its_own_allowance(replicas: Replicas, user: User) -> None:
    other = httpx.post(replicas.stack.base_url + "/v1/keys", headers=user.headers,
                       json={"name": "second"}).json()["key"]
    for _ in range(GENERAL_LIMIT):
        httpx.get(replicas.stack.base_url + "/v1/jobs", headers=user.headers)
    assert httpx.get(replicas.stack.base_url + "/v1/jobs",
                     headers=user.headers).status_code == 429
    fresh = httpx.get(replicas.stack.base_url + "/v1/jobs",
                      headers={"X-API-Key": other})
    assert fresh.status_code == 200
    assert int(fresh.headers["x-ratelimit-remaining"]) == GENERAL_LIMIT - 1


def test_a_guessing_address_is_slowed_down_but_the_owner_still_logs_in(
        replicas: Replicas) -> None:
    with httpx.Client(timeout=10) as http:
        http.base_url = httpx.URL(replicas.stack.base_url)
        account = create_user(http, replicas.stack.headers)
    attacker, owner = _as_client(_client_address()), _as_client("198.51.100.7")
    statuses = [
        httpx.post(url + "/v1/auth/login", headers=attacker,
                   json={"email": account["email"], "password": "wrong"}).status_code
        for url in itertools.islice(itertools.cycle(replicas.urls), 4)
    ]
    assert statuses == [401, 401, 401, 429]
    refused = httpx.post(replicas.second_url + "/v1/auth/login", headers=attacker,
                         json={"email": account["email"], "password": PASSWORD})
    assert refused.status_code == 429 and "retry-after" in refused.headers
    # The account is not locked: its owner, from another address, logs in.
    right = httpx.post(replicas.second_url + "/v1/auth/login", headers=owner,
                       json={"email": account["email"], "password": PASSWORD})
    assert right.status_code == 200


def test_x_forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(
        replicas: Replicas) -> None:
    statuses = []
    with _from_loopback_peer(replicas.second_url) as http:
        for _ in range(AUTH_FAILURE_LIMIT + 1):
            # A new address in the header each time: it must not buy a fresh allowance.
            statuses.append(http.get("/v1/keys/validate", headers={
                "X-API-Key": "sy-not-a-key", **_as_client(_client_address())}).status_code)
    assert statuses == [401] * AUTH_FAILURE_LIMIT + [429]


def test_invalid_credentials_are_refused_per_address_before_any_lookup(
        replicas: Replicas, user: User) -> None:
    guesser = _as_client(_client_address())
    statuses = [httpx.get(url + "/v1/keys/validate",
                          headers={"X-API-Key": f"sy-guess-{n}", **guesser}).status_code
                for n, url in zip(range(AUTH_FAILURE_LIMIT + 1),
                                  itertools.cycle(replicas.urls), strict=False)]
    assert statuses == [401] * AUTH_FAILURE_LIMIT + [429]
    refused = httpx.get(replicas.stack.base_url + "/v1/keys/validate",
                        headers={"X-API-Key": "sy-one-more", **guesser})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    # Other clients are not affected.
    assert httpx.get(replicas.stack.base_url + "/v1/keys/validate",
                     headers={**user.headers, **_as_client(_client_address())}
                     ).status_code == 200


def test_every_websocket_start_spends_the_chat_allowance(replicas: Replicas) -> None:
    with httpx.Client(base_url=replicas.stack.base_url, timeout=10) as http:
        tight = new_user(http, replicas.stack.headers, tier="tight")
    url = replicas.stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    outcomes = []
    with connect(url, additional_headers=tight.headers, open_timeout=10) as socket:
        # The handshake spends one chat request, which pays for the first start.
        for n in range(TIGHT_CHAT_LIMIT + 2):
            socket.send(orjson.dumps({"type": "start", "model": "dev/echo", "messages": [
                {"role": "user", "content": f"start {n}"}]}).decode())
            while True:
                frame = orjson.loads(socket.recv(timeout=15))
                if frame["type"] in ("done", "error"):
                    outcomes.append(frame.get("code", frame["type"]))
                    break
    assert outcomes == ["done"] * TIGHT_CHAT_LIMIT + ["RATE_LIMIT_EXCEEDED"] * 2
    # HTTP chat shares the same spent allowance.
    http_chat = httpx.post(replicas.second_url + "/v1/chat/completions", headers=tight.headers,
                           json={"model": "dev/echo",
                                 "messages": [{"role": "user", "content": "hi"}]})
    assert http_chat.status_code == 429


def test_a_chat_job_from_post_v1_jobs_spends_the_chat_allowance(replicas: Replicas) -> None:
    with httpx.Client(base_url=replicas.stack.base_url, timeout=10) as http:
        tight = new_user(http, replicas.stack.headers, tier="tight")
    chat = {"kind": "chat", "input": {"model": "dev/echo",
                                      "messages": [{"role": "user", "content": "hi"}]}}
    statuses = [httpx.post(url + "/v1/jobs", headers=tight.headers, json=chat).status_code
                for url in itertools.islice(itertools.cycle(replicas.urls),
                                            TIGHT_CHAT_LIMIT + 1)]
    assert statuses == [202] * TIGHT_CHAT_LIMIT + [429]


def test_retrying_a_chat_job_spends_the_chat_allowance_again(replicas: Replicas) -> None:
    url = replicas.stack.base_url
    with httpx.Client(base_url=url, timeout=10) as http:
        tight = new_user(http, replicas.stack.headers, tier="tight")
    with httpx.Client(base_url=url, headers=tight.headers, timeout=10) as http:
        slow = {"model": "dev/lorem", "max_tokens": 200, "dev_options": {"token_delay_ms": 50},
                "messages": [{"role": "user", "content": "hi"}]}
        job_id = http.post("/v1/jobs", json={"kind": "chat", "input": slow}).json()["id"]
        statuses = []
        for _ in range(TIGHT_CHAT_LIMIT):
            assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            statuses.append(http.post(f"/v1/jobs/{job_id}/retry").status_code)
    # The submission spent one of the allowance; each retry spends another.
    assert statuses == [202] * (TIGHT_CHAT_LIMIT - 1) + [429]


def test_a_job_in_the_routes_own_group_is_not_counted_twice(replicas: Replicas,
                                                             user: User) -> None:
    remaining = []
    for url in replicas.urls:
        response = httpx.post(url + "/v1/jobs", headers=user.headers,
                              json={"kind": "noop", "input": {}})
        assert response.status_code == 202, response.text
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [GENERAL_LIMIT - 1, GENERAL_LIMIT - 2]


def test_a_revoked_key_stops_on_every_replica_at_once(replicas: Replicas, user: User) -> None:
    key = httpx.post(replicas.stack.base_url + "/v1/keys", headers=user.headers,
                     json={"name": "short-lived"}).json()
    for url in replicas.urls:  # warm both processes' credential caches
        assert httpx.get(url + "/v1/keys/validate",
                         headers={"X-API-Key": key["key"]}).status_code == 200
    httpx.delete(f"{replicas.stack.base_url}/v1/keys/{key['id']}", headers=user.headers)
    assert httpx.get(replicas.stack.base_url + "/v1/keys/validate",
                     headers={"X-API-Key": key["key"]}).status_code == 401
    # The other replica hears of it over pub/sub, well before its cache entry (30 s) ends.
    assert _eventually(lambda: httpx.get(
        replicas.second_url + "/v1/keys/validate", headers={"X-API-Key": key["key"]}
    ).status_code == 401)


def test_a_lost_pubsub_connection_drops_every_cached_credential(
        replicas: Replicas, user: User, redis_url: str, database_url: str) -> None:
    key = httpx.post(replicas.stack.base_url + "/v1/keys", headers=user.headers,
                     json={"name": "missed-notice"}).json()
    validate = replicas.second_url + "/v1/keys/validate"
    assert httpx.get(validate, headers={"X-API-Key": key["key"]}).status_code == 200
    # Revoked behind the API's back: no notice is published, as if it had been missed.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key["id"],))
    assert httpx.get(validate, headers={"X-API-Key": key["key"]}).status_code == 200
    redis = SyncRedis.from_url(redis_url)
    try:
        redis.client_kill_filter(_type="pubsub")  # every hub reconnects
    finally:
        redis.close()
    assert _eventually(lambda: httpx.get(
        validate, headers={"X-API-Key": key["key"]}).status_code == 401, timeout_s=10)


def test_a_spent_token_budget_refuses_chat(replicas: Replicas, user: User,
                                           redis_url: str) -> None:
    async def spend() -> None:
        redis = Redis.from_url(redis_url)
        try:
            await record_tokens(redis, Keys(replicas.stack.namespace), f"key:{user.key_id}",
                                100)
        finally:
            await redis.aclose()

    asyncio.run(spend())
    response = httpx.post(replicas.second_url + "/v1/chat/completions", headers=user.headers,
                          json={"model": "dev/echo",
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert int(response.headers["retry-after"]) <= 86_400


def test_tokens_spent_by_chat_jobs_count_against_the_daily_budget(replicas: Replicas,
                                                                   user: User) -> None:
    # DAILY_TOKEN_BUDGET is 100: each echo of 40 words costs about 50 tokens, so the third
    # request finds the budget spent by the workers' own records.
    body = {"model": "dev/echo", "messages": [{"role": "user", "content": "word " * 40}]}
    statuses = []
    for url in itertools.islice(itertools.cycle(replicas.urls), 4):
        response = httpx.post(url + "/v1/chat/completions", headers=user.headers, json=body,
                              timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "insufficient_quota"
            break
    assert statuses[:2] == [200, 200]
    assert statuses[-1] == 429
