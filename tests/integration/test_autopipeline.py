"""Auto-pipelined script calls on a real Redis: one round trip per loop turn, each caller its
own reply, and a Redis that lost its scripts is recovered without running anything twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from pipelines.autopipeline import ScriptPipeliner
from pipelines.redis_client import async_redis

# Appends ARGV[1] to a list and returns the list's new length; errors on ARGV[1] == "boom".
_SCRIPT = """
if ARGV[1] == 'boom' then return redis.error_reply('boom') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


async def _with_client(redis_url: str, test: Any) -> None:
    client = async_redis(redis_url, max_connections=8)
    try:
        await test(client)
    finally:
        await client.aclose()


def test_calls_made_in_one_turn_share_one_pipeline_and_each_gets_its_own_reply(
    redis_url: str,
) -> None:
    key = f"autopipeline:{uuid.uuid4().hex}"

    async def test(client: Redis) -> None:
        pipeliner = ScriptPipeliner(client, _SCRIPT)
        await client.script_load(_SCRIPT)
        sent: list[int] = []
        original = pipeliner._pipeline

        async def counting(commands: list[Any]) -> list[Any]:
            sent.append(len(commands))
            return await original(commands)

        pipeliner._pipeline = counting  # type: ignore[method-assign]
        replies = await asyncio.gather(*(pipeliner.call([key], [str(i)]) for i in range(50)))
        assert sorted(replies) == list(range(1, 51))
        assert sent == [50]
        assert await client.lrange(key, 0, -1) == [str(i).encode() for i in range(50)]
        await client.delete(key)

    asyncio.run(_with_client(redis_url, test))


def test_an_error_reply_reaches_only_its_own_caller(redis_url: str) -> None:
    key = f"autopipeline:{uuid.uuid4().hex}"

    async def test(client: Redis) -> None:
        pipeliner = ScriptPipeliner(client, _SCRIPT)
        results = await asyncio.gather(pipeliner.call([key], ["a"]),
                                       pipeliner.call([key], ["boom"]),
                                       pipeliner.call([key], ["b"]), return_exceptions=True)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], Exception) and "boom" in str(results[1])
        await client.delete(key)

    asyncio.run(_with_client(redis_url, test))


def test_scripts_flushed_from_redis_are_loaded_again_and_each_command_runs_once(
    redis_url: str,
) -> None:
    key = f"autopipeline:{uuid.uuid4().hex}"

    async def test(client: Redis) -> None:
        pipeliner = ScriptPipeliner(client, _SCRIPT)
        assert await pipeliner.call([key], ["first"]) == 1
        await client.script_flush()
        replies = await asyncio.gather(*(pipeliner.call([key], [str(i)]) for i in range(5)))
        assert sorted(replies) == [2, 3, 4, 5, 6]
        assert await client.llen(key) == 6
        await client.delete(key)

    asyncio.run(_with_client(redis_url, test))
