"""Concurrency leases: at most N running jobs (streams included) per key, across replicas.

Each running job holds a lease: a member of the caller's Redis sorted set, scored by when
it expires. The API process that started the job keeps it: this module's LeaseKeeper
renews every held lease each `ttl_s / 3` and releases it once the job's event log ends
with a terminal event (checked right after the request that started it returns, then on
each renewal). A crashed replica renews nothing, so its leases expire within `ttl_s` and
the slots come back by themselves; nothing has to notice the crash.

Taking a lease costs no round trip of its own on the hot path: for chat requests the rate
limiter's script takes it together with the request's allowance (api/limits.py); other
jobs take one when they are submitted. Renewals and releases go through one
auto-pipelined script (pipelines/autopipeline.py), so a loop turn's worth share a round
trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipelines.autopipeline import ScriptPipeliner
from pipelines.errors import RateLimited
from pipelines.keys import Keys

log = logging.getLogger("switchyard.leases")

# Lua taking one lease in KEYS[LEASE_KEY] for member ARGV[M] with limit ARGV[M+1] and ttl
# (ms) ARGV[M+2]; sets `lease` to 1 (taken) or 0 (full) and `lease_wait_ms` to when the
# oldest lease expires. Shared by the limiter's script and `_ACQUIRE`.
LEASE_LUA = """
local function take_lease(set_key, member, lease_limit, ttl_ms)
    local clock = redis.call('TIME')
    local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', set_key, '-inf', now_ms)
    if redis.call('ZSCORE', set_key, member) or
            redis.call('ZCARD', set_key) < lease_limit then
        redis.call('ZADD', set_key, now_ms + ttl_ms, member)
        redis.call('PEXPIRE', set_key, ttl_ms * 2)
        return 1, 0
    end
    local oldest = redis.call('ZRANGE', set_key, 0, 0, 'WITHSCORES')
    return 0, math.max(0, tonumber(oldest[2]) - now_ms)
end
"""

_ACQUIRE = LEASE_LUA + """
local taken, wait_ms = take_lease(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {taken, wait_ms}
"""

# KEYS: the lease set, the job's event stream. ARGV: member, ttl (ms), '1' to release
# regardless. Releases when the job's last event is terminal, else renews (if still held).
_KEEP = """
local ended = ARGV[3] == '1'
if not ended then
    local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if #last > 0 then
        local fields = last[1][2]
        for i = 1, #fields, 2 do
            if fields[i] == 't' then
                local t = fields[i + 1]
                ended = t == 'succeeded' or t == 'failed' or t == 'cancelled'
            end
        end
    end
end
if ended then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 0
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    return 0  -- expired meanwhile (this process stalled longer than the ttl)
end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""

# A retry hint when the oldest lease's expiry says nothing useful (it is renewed).
_MAX_RETRY_AFTER_S = 5


class ConcurrencyLimited(RateLimited):
    """The key already runs as many jobs as its tier allows."""

    code = "CONCURRENCY_LIMIT_EXCEEDED"


def concurrency_refusal(limit: int, wait_ms: float) -> ConcurrencyLimited:
    return ConcurrencyLimited(
        f"At most {limit} jobs or streams may run at once for this key; retry when one ends.",
        retry_after_s=max(1, min(_MAX_RETRY_AFTER_S, math.ceil(wait_ms / 1000))),
        details={"concurrent_limit": limit})


@dataclass(slots=True)
class _Held:
    set_key: str
    events_key: str
    since: float  # time.monotonic()


class LeaseKeeper:
    """The leases this process holds; renews them and releases the ones whose job ended."""

    def __init__(self, redis: Redis, keys: Keys, *, limits: dict[str, int], ttl_s: float,
                 max_hold_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.max_hold_s = max_hold_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._keep = ScriptPipeliner(redis, _KEEP)
        self._held: dict[str, _Held] = {}
        self._task: asyncio.Task[None] | None = None

    def limit_for(self, tier: str) -> int:
        """Running jobs a key of `tier` may have (0: no limit)."""
        return self.limits.get(tier, self.limits.get("default", 0))

    def set_key(self, identity: str) -> str:
        return self.keys.concurrency(identity)

    async def acquire(self, identity: str, tier: str, member: str) -> None:
        """Take a lease for `member` (a job id) or raise ConcurrencyLimited."""
        limit = self.limit_for(tier)
        if limit <= 0:
            return
        try:
            taken, wait_ms = await self._acquire(keys=[self.set_key(identity)],
                                                 args=[member, limit, self.ttl_ms])
        except RedisError:
            log.warning("concurrency leases unavailable; letting the job through")
            return
        if not taken:
            raise concurrency_refusal(limit, float(wait_ms))
        self.hold(identity, member, member)

    def hold(self, identity: str, member: str, job_id: str) -> None:
        """Keep `member`'s lease (taken already) until `job_id` ends."""
        self._held[member] = _Held(self.set_key(identity), self.keys.events(job_id),
                                   time.monotonic())

    async def settle(self, member: str) -> None:
        """Release now if the job has ended (after the request that started it returns)."""
        await self._run_keep(member, force=False)

    async def release(self, identity: str, member: str) -> None:
        """Give a lease back that no job took (the request failed before submitting)."""
        self._held.setdefault(member, _Held(self.set_key(identity), "", time.monotonic()))
        await self._run_keep(member, force=True)

    async def _run_keep(self, member: str, *, force: bool) -> None:
        held = self._held.get(member)
        if held is None:
            return
        try:
            kept = await self._keep.call([held.set_key, held.events_key or held.set_key],
                                         [member, self.ttl_ms, "1" if force else "0"])
        except RedisError:
            return  # renewed or released on a later turn; expiry bounds the damage
        if not kept:
            self._held.pop(member, None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            now = time.monotonic()
            for member, held in list(self._held.items()):
                if now - held.since > self.max_hold_s:
                    await self._run_keep(member, force=True)
            await asyncio.gather(*(self._run_keep(m, force=False) for m in list(self._held)),
                                 return_exceptions=True)
