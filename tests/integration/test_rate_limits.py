"""Rate limits shared by two API processes on one Redis: the combined allowance holds.

One stack (API + workers) plus a second uvicorn on the same database, Redis and
namespace, as two replicas behind a load balancer would be.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.devservices import free_port, spawn, web_command
from pipelines.budgets import record_tokens
from pipelines.keys import Keys
from tests.integration.accounts import PASSWORD, User, create_user, new_user, unique_email
from tests.integration.conftest import PROJECT_DIR, Stack, _start_stack

GENERAL_LIMIT = 12
TIERS = {
    "default": {"auth": "100/minute", "chat": "100/minute", "search": "100/minute",
                "upload": "100/minute", "general": f"{GENERAL_LIMIT}/minute"},
    "admin": {"auth": "100000/minute", "chat": "100000/minute", "search": "100000/minute",
              "upload": "100000/minute", "general": "100000/minute"},
}
ENV = {
    "RATE_LIMIT_TIERS": orjson.dumps(TIERS).decode(),
    "LOGIN_LIMIT_PER_ACCOUNT": "3/minute",
    "LOGIN_LIMIT_PER_ADDRESS": "50/minute",
    "DAILY_TOKEN_BUDGET": "100",
}


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


def test_login_attempts_are_limited_per_account(replicas: Replicas) -> None:
    with httpx.Client(timeout=10) as http:
        http.base_url = httpx.URL(replicas.stack.base_url)
        account = create_user(http, replicas.stack.headers)
    statuses = [
        httpx.post(url + "/v1/auth/login",
                   json={"email": account["email"], "password": "wrong"}).status_code
        for url in itertools.islice(itertools.cycle(replicas.urls), 4)
    ]
    assert statuses == [401, 401, 401, 429]
    # Even the right password waits now: the limit is on attempts, not failures.
    right = httpx.post(replicas.second_url + "/v1/auth/login",
                       json={"email": account["email"], "password": PASSWORD})
    assert right.status_code == 429 and "retry-after" in right.headers
    other = httpx.post(replicas.second_url + "/v1/auth/login",
                       json={"email": unique_email(), "password": "wrong"})
    assert other.status_code == 401


def test_a_revoked_key_stops_on_every_replica_at_once(replicas: Replicas, user: User) -> None:
    key = httpx.post(replicas.stack.base_url + "/v1/keys", headers=user.headers,
                     json={"name": "short-lived"}).json()
    for url in replicas.urls:  # warm both processes' credential caches
        assert httpx.get(url + "/v1/keys/validate",
                         headers={"X-API-Key": key["key"]}).status_code == 200
    httpx.delete(f"{replicas.stack.base_url}/v1/keys/{key['id']}", headers=user.headers)
    for url in replicas.urls:
        assert httpx.get(url + "/v1/keys/validate",
                         headers={"X-API-Key": key["key"]}).status_code == 401


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
