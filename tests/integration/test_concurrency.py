"""Concurrency limits per key, shared by API replicas through Redis leases: running
streams and jobs count wherever they started; a slot comes back when its job ends, and
when the replica holding it dies (its lease is not renewed and expires). Daily token
budgets per tier."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from api.devservices import free_port, spawn, web_command
from pipelines.budgets import record_tokens
from pipelines.keys import Keys
from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import PROJECT_DIR, Stack, _start_stack
from tests.integration.jobclient import lorem_input

LIMIT = 2
LEASE_TTL_S = 3
ENV = {
    **RELAXED_LOGIN_ENV,
    "CONCURRENCY_LIMITS": orjson.dumps({"default": LIMIT, "pro": 4, "admin": 0}).decode(),
    "CONCURRENCY_LEASE_TTL_S": str(LEASE_TTL_S),
    "TIER_DAILY_TOKEN_BUDGETS": orjson.dumps({"pro": 50}).decode(),
}
SLOW = lorem_input(words=2000, delay_ms=20, stream=True)


@dataclass
class Replicas:
    stack: Stack
    urls: list[str]
    processes: list[object]


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"API process at {url} never became healthy")


def _spawn_replica(stack: Stack, name: str) -> tuple[str, object]:
    port = free_port()
    process = spawn(web_command("127.0.0.1", port), log_path=stack.log_dir / f"{name}.log",
                    env=stack.env, cwd=PROJECT_DIR)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url)
    return url, process


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, database_url: str,
             redis_url: str) -> Iterator[Replicas]:
    stack = _start_stack(tmp_path_factory.mktemp("concurrency"), database_url, redis_url,
                         env=ENV, worker_threads=16)
    url, second = _spawn_replica(stack, "web2")
    try:
        yield Replicas(stack, [stack.base_url, url], [second])
    finally:
        second.terminate()  # type: ignore[attr-defined]
        second.wait(10)  # type: ignore[attr-defined]
        stack.stop()


@pytest.fixture
def user(replicas: Replicas) -> User:
    with httpx.Client(base_url=replicas.stack.base_url, timeout=10) as http:
        return new_user(http, replicas.stack.headers)


@contextlib.contextmanager
def _running_stream(url: str, user: User) -> Iterator[httpx.Response]:
    """A streamed chat that is under way (its first chunk arrived) until the block ends."""
    with httpx.Client(base_url=url, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", headers=user.headers, json=SLOW) as response:
        assert response.status_code == 200, response.read()
        # Keep the iterator referenced: a collected one closes the stream (a hang-up).
        chunks = response.iter_bytes()
        next(chunks)
        yield response
        del chunks


def _chat(url: str, user: User) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=user.headers, timeout=30,
                      json={"model": "dev/echo", "messages": [{"role": "user", "content": "hi"}]})


def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _leases(redis_url: str, stack: Stack, user: User) -> int:
    """The user's unexpired leases (expired ones are swept on the next acquire)."""
    redis = SyncRedis.from_url(redis_url)
    try:
        seconds, micros = redis.time()
        now_ms = seconds * 1000 + micros // 1000
        return int(redis.zcount(Keys(stack.namespace).concurrency(f"key:{user.key_id}"),
                                f"({now_ms}", "+inf"))
    finally:
        redis.close()


def test_running_streams_on_two_replicas_share_one_limit(replicas: Replicas,
                                                         user: User, redis_url: str) -> None:
    first_url, second_url = replicas.urls
    with _running_stream(first_url, user), _running_stream(second_url, user):
        assert _leases(redis_url, replicas.stack, user) == LIMIT
        for url in replicas.urls:
            refused = _chat(url, user)
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 5
            assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert "x-ratelimit-remaining" in refused.headers
        own = httpx.post(second_url + "/v1/jobs", headers=user.headers,
                         json={"kind": "chat", "input": lorem_input(words=5)})
        assert own.status_code == 429
        assert own.json()["error"]["code"] == "CONCURRENCY_LIMIT_EXCEEDED"
    # Both streams ended (the client hung up): their slots come back.
    assert _eventually(lambda: _chat(first_url, user).status_code == 200)
    assert _chat(second_url, user).status_code == 200


def test_a_background_job_holds_its_slot_until_it_ends(replicas: Replicas, user: User,
                                                       redis_url: str) -> None:
    first_url, second_url = replicas.urls
    jobs = [httpx.post(url + "/v1/jobs", headers=user.headers,
                       json={"kind": "chat", "input": lorem_input(words=2000, delay_ms=20)})
            for url in replicas.urls]
    assert [j.status_code for j in jobs] == [202, 202]
    # The requests ended, the jobs run on: both slots stay taken.
    assert _leases(redis_url, replicas.stack, user) == LIMIT
    assert _chat(first_url, user).status_code == 429
    job_id = jobs[0].json()["id"]
    assert httpx.post(f"{second_url}/v1/jobs/{job_id}/cancel",
                      headers=user.headers).status_code == 200
    # The replica that holds the lease sees the terminal event on its next renewal.
    assert _eventually(lambda: _chat(second_url, user).status_code == 200)
    httpx.post(f"{first_url}/v1/jobs/{jobs[1].json()['id']}/cancel", headers=user.headers)


def test_a_killed_replicas_leases_expire_and_free_their_slots(replicas: Replicas,
                                                              user: User,
                                                              redis_url: str) -> None:
    doomed_url, doomed = _spawn_replica(replicas.stack, "doomed")
    try:
        with contextlib.ExitStack() as streams:
            streams.enter_context(_running_stream(doomed_url, user))
            streams.enter_context(_running_stream(replicas.urls[0], user))
            assert _leases(redis_url, replicas.stack, user) == LIMIT
            assert _chat(replicas.urls[1], user).status_code == 429
            doomed.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
            doomed.wait(10)  # type: ignore[attr-defined]
            # Nobody renews the dead replica's lease: it expires, and its slot is free
            # again while the other stream still runs.
            assert _eventually(lambda: _leases(redis_url, replicas.stack, user) == 1)
            assert _chat(replicas.urls[1], user).status_code == 200
            assert _chat(replicas.urls[1], user).status_code == 200
    finally:
        if doomed.poll() is None:  # type: ignore[attr-defined]
            doomed.kill()  # type: ignore[attr-defined]


def test_tiers_have_their_own_concurrency_and_daily_token_budget(
        replicas: Replicas, redis_url: str) -> None:
    with httpx.Client(base_url=replicas.stack.base_url, timeout=10) as http:
        pro = new_user(http, replicas.stack.headers, tier="pro")
        default = new_user(http, replicas.stack.headers)
    with contextlib.ExitStack() as streams:
        for url in itertools.islice(itertools.cycle(replicas.urls), 3):
            streams.enter_context(_running_stream(url, pro))  # over default's 2
        assert _chat(replicas.urls[1], pro).status_code == 200

    async def spend(who: User) -> None:
        redis = Redis.from_url(redis_url)
        try:
            await record_tokens(redis, Keys(replicas.stack.namespace), f"key:{who.key_id}", 60)
        finally:
            await redis.aclose()

    asyncio.run(spend(pro))
    asyncio.run(spend(default))
    over = _chat(replicas.urls[0], pro)
    assert over.status_code == 429 and over.json()["error"]["code"] == "insufficient_quota"
    # The default tier has no budget of its own and DAILY_TOKEN_BUDGET is 0 (none).
    assert _chat(replicas.urls[0], default).status_code == 200
