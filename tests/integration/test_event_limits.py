"""A job's event log on a real Redis: one event and all of a job's events together are
capped, a refused event stores nothing, and a terminal event always gets through."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from pipelines.errors import EventStreamFull, EventTooLarge
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys

T = TypeVar("T")


def on_redis(redis_url: str, check: Callable[[Redis], Awaitable[T]]) -> T:
    async def run() -> T:
        redis = Redis.from_url(redis_url)
        try:
            return await check(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def test_an_event_over_the_size_limit_is_refused_with_its_code_and_not_stored(
    redis_url: str, namespace: str,
) -> None:
    keys, job_id = Keys(namespace), str(uuid.uuid4())

    async def check(redis: Redis) -> None:
        log = AsyncEventLog(redis, keys, max_event_bytes=1024)
        await log.publish(job_id, "started", {"attempt": 1})

        with pytest.raises(EventTooLarge) as caught:
            await log.publish(job_id, "delta", {"text": "x" * 2000})

        assert caught.value.code == "EVENT_TOO_LARGE"
        assert caught.value.details["max"] == 1024
        assert await redis.xlen(keys.events(job_id)) == 1

    on_redis(redis_url, check)


def test_a_jobs_events_together_are_capped_and_its_terminal_event_still_gets_through(
    redis_url: str, namespace: str,
) -> None:
    keys, job_id = Keys(namespace), str(uuid.uuid4())
    delta = {"text": "x" * 990}  # 1,003 bytes encoded

    async def check(redis: Redis) -> None:
        log = AsyncEventLog(redis, keys, max_event_bytes=4096, max_stream_bytes=10_000)
        for _ in range(9):
            event_id, _ = await log.publish(job_id, "delta", delta)
            assert event_id is not None

        with pytest.raises(EventStreamFull) as caught:
            await log.publish(job_id, "delta", delta)

        assert caught.value.code == "EVENT_STREAM_TOO_LARGE"
        assert await redis.xlen(keys.events(job_id)) == 9
        error = {"code": caught.value.code, "message": caught.value.message}
        failed, _ = await log.publish(job_id, "failed", {"error": error}, terminal=True)
        assert failed is not None
        assert await redis.xlen(keys.events(job_id)) == 10
        assert 0 < await redis.ttl(keys.event_bytes(job_id)) <= log.ttl_s

    on_redis(redis_url, check)


def test_a_terminal_event_over_the_event_limit_is_accepted_so_the_job_can_end(
    redis_url: str, namespace: str,
) -> None:
    keys, job_id = Keys(namespace), str(uuid.uuid4())

    async def check(redis: Redis) -> None:
        log = AsyncEventLog(redis, keys, max_event_bytes=1024)
        event_id, _ = await log.publish(job_id, "succeeded",
                                        {"result": {"content": "x" * 5000}}, terminal=True)
        assert event_id is not None
        assert await redis.xlen(keys.events(job_id)) == 1

    on_redis(redis_url, check)
