"""api/limits.Limiter on a real Redis: one round trip per request, the `limits` library's
sliding-window-counter semantics and keys, and tests that spend nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from api.limits import Limiter
from pipelines.errors import RateLimited
from pipelines.keys import Keys

T = TypeVar("T")
TIERS = {"default": {"auth": "5/minute", "chat": "5/minute", "search": "5/minute",
                     "upload": "5/minute", "general": "5/minute"}}


def _run(redis_url: str, namespace: str,
         body: Callable[[Limiter, Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = Redis.from_url(redis_url)
        try:
            limiter = Limiter(redis, Keys(namespace), strategy="sliding-window-counter",
                              tiers=TIERS, login_failures_per_account="3/minute",
                              login_per_address="30/minute",
                              auth_failures_per_address="3/minute", daily_token_budget=0)
            return await body(limiter, redis)
        finally:
            await redis.aclose()
    return asyncio.run(main())


def test_a_hit_and_its_window_cost_one_round_trip(redis_url: str, namespace: str) -> None:
    async def body(limiter: Limiter, redis: Redis) -> list[Any]:
        await limiter.hit("key:a", "default", "chat")  # loads the script once
        calls: list[Any] = []
        real = redis.execute_command

        async def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(args[0])
            return await real(*args, **kwargs)

        redis.execute_command = counting  # type: ignore[method-assign]
        window = await limiter.hit("key:a", "default", "chat")
        assert window is not None and window.remaining == 3
        return calls

    assert _run(redis_url, namespace, body) == ["EVALSHA"]


def test_the_script_keeps_the_librarys_keys_and_counts(redis_url: str, namespace: str) -> None:
    async def body(limiter: Limiter, redis: Redis) -> None:
        windows = [await limiter.hit("key:b", "default", "general") for _ in range(7)]
        assert [w.allowed for w in windows if w] == [True] * 5 + [False] * 2
        assert [w.remaining for w in windows if w] == [4, 3, 2, 1, 0, 0, 0]
        assert all(w is not None and 0 < w.reset_s <= 60 for w in windows)
        # The library, reading the same keys, sees the same spent window.
        library = SlidingWindowCounterRateLimiter(RedisStorage(
            "async+redis://", implementation="redispy",
            key_prefix=Keys(namespace).rate_limit_prefix(),
            connection_pool=redis.connection_pool))  # type: ignore[arg-type]
        item = parse("5/minute")
        assert not await library.test(item, "general", "key:b")
        assert (await library.get_window_stats(item, "general", "key:b")).remaining == 0
        assert await library.test(item, "general", "key:other")

    _run(redis_url, namespace, body)


def test_checking_failed_credentials_spends_nothing_until_one_fails(
        redis_url: str, namespace: str) -> None:
    async def body(limiter: Limiter, redis: Redis) -> None:
        for _ in range(10):
            await limiter.check_auth_failures("10.9.8.7")
        for _ in range(3):
            await limiter.auth_failed("10.9.8.7")
        with pytest.raises(RateLimited) as refused:
            await limiter.check_auth_failures("10.9.8.7")
        assert 1 <= refused.value.retry_after_s <= 60
        await limiter.check_auth_failures("10.9.8.8")  # another address is unaffected

    _run(redis_url, namespace, body)
