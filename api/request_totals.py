"""Today's HTTP requests, response time and errors across every API process.

`GET /v1/system/metrics` answers "requests today" for the whole deployment, so a
per-process Prometheus counter (which restarts with its process) cannot serve, and one
Redis round trip per request would cost the hot path what the gateway benchmark measures.
Each process adds to plain integers in memory (`add`, a few attribute updates) and folds
them into one Redis hash per UTC day every few seconds (`flush`, from the queue-gauge loop)
and before answering that route.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from redis.asyncio import Redis

from pipelines.keys import Keys

_KEEP_S = 3 * 86_400


def utc_day(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


@dataclass(slots=True)
class _Pending:
    day: str
    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0


class RequestTotals:
    """This process's requests not yet folded into Redis, by UTC day."""

    def __init__(self) -> None:
        self._pending = _Pending(utc_day())

    def add(self, status: int, elapsed_s: float) -> None:
        pending = self._pending
        pending.requests += 1
        pending.duration_s += elapsed_s
        if status >= 500:
            pending.errors += 1

    async def flush(self, redis: Redis, keys: Keys) -> None:
        """Fold the pending counts into the hash of the day the batch began (a request in
        the seconds before a flush that crosses midnight counts for the day before)."""
        pending, self._pending = self._pending, _Pending(utc_day())
        if not pending.requests:
            return
        key = keys.request_totals(pending.day)
        pipe = redis.pipeline(transaction=False)
        pipe.hincrby(key, "requests", pending.requests)
        pipe.hincrby(key, "errors", pending.errors)
        pipe.hincrbyfloat(key, "duration_s", pending.duration_s)
        pipe.expire(key, _KEEP_S)
        try:
            await pipe.execute()
        except Exception:
            # Redis is down: keep the counts for the next flush rather than lose them.
            self._pending.requests += pending.requests
            self._pending.errors += pending.errors
            self._pending.duration_s += pending.duration_s
            raise

    @staticmethod
    async def today(redis: Redis, keys: Keys) -> dict[str, float]:
        raw = await redis.hgetall(keys.request_totals(utc_day()))
        values = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}
        return {"requests": values.get("requests", 0.0), "errors": values.get("errors", 0.0),
                "duration_s": values.get("duration_s", 0.0)}


# This process's totals: like prometheus_client's default registry, one per process.
REQUEST_TOTALS = RequestTotals()
