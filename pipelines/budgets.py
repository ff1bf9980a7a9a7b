"""Daily token budgets per API key: a Redis counter per key per UTC day.

The API checks `tokens_spent` before accepting a chat request (api/limits.py); whoever
records a finished chat job's usage adds its tokens with `record_tokens`, under
`budget_id(key_id, owner_id)`. The counter outlives its day by one day.
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis

from pipelines.keys import Keys

_KEEP_S = 2 * 86_400


def budget_id(key_id: str | None, owner_id: str) -> str:
    """Whose budget a job spends: its API key's, or for session callers the user's.

    Matches `Principal.limit_key` in the API.
    """
    return f"key:{key_id}" if key_id else f"user:{owner_id}"


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime | None = None) -> float:
    """When today's budget refills."""
    current = now or datetime.now(UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    return 86_400 - (current - midnight).total_seconds()


async def tokens_spent(redis: Redis, keys: Keys, key_id: str) -> int:
    """Tokens `key_id` has spent today."""
    value = await redis.get(keys.token_budget(key_id, utc_day()))
    return int(value or 0)


async def record_tokens(redis: Redis, keys: Keys, key_id: str, tokens: int) -> int:
    """Add `tokens` to today's spend for `key_id`; returns the new total."""
    name = keys.token_budget(key_id, utc_day())
    pipe = redis.pipeline(transaction=False)
    pipe.incrby(name, max(0, tokens))
    pipe.expire(name, _KEEP_S)
    total, _ = await pipe.execute()
    return int(total)
