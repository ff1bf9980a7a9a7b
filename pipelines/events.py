"""The per-job event log: a capped Redis Stream for replay plus a pub/sub notice for followers.

Publishing is one round trip (a Lua script): it refuses to publish once the job's cancel
flag is set (unless forced, for the terminal `cancelled` event itself) and tells the
publisher whether the job was cancelled, so a worker checks for cancellation between tokens
at no extra cost. The flag holds the attempt number that was cancelled: a worker publishing
for that attempt (or an earlier one) is refused, while the attempt a retry starts later is
not, so a retry never revives a cancelled attempt that has not noticed its flag yet.

The pub/sub notice carries the whole event, so live followers never read
the stream; they read it only to replay what they missed.

What one job may put into Redis is bounded: the stream keeps at most about `maxlen` entries,
an event's encoded data may hold `max_event_bytes` (refused in Python, before the round
trip) and a job's events together `max_stream_bytes` (a per-job byte counter in the same
script). Terminal and forced events pass both byte limits, so every job can still end; the
result a `succeeded` event carries is capped before the job succeeds
(pipelines/output_limits.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis as AsyncRedis

from pipelines.autopipeline import ScriptPipeliner
from pipelines.errors import EventStreamFull, EventTooLarge
from pipelines.keys import Keys
from schemas.jobs import Event

_PUBLISH_LUA = """
local cancelled = 0
local flag = redis.call('GET', KEYS[3])
if flag and (ARGV[8] == '' or tonumber(ARGV[8]) <= (tonumber(flag) or math.huge)) then
  cancelled = 1
end
if cancelled == 1 and ARGV[6] ~= '1' then
  return {'', 1}
end
if ARGV[6] ~= '1' and ARGV[7] ~= '1' and
    redis.call('INCRBY', KEYS[4], #ARGV[3]) > tonumber(ARGV[9]) then
  return {'', cancelled, 1}
end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 't', ARGV[2], 's', seq,
                      'd', ARGV[3])
redis.call('PUBLISH', ARGV[1], id .. '\\n' .. seq .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
if seq == 1 or ARGV[7] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return {id, cancelled}
"""


def parse_message(job_id: str, payload: bytes | str) -> Event:
    """Decode a pub/sub notice published by the script above."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    event_id, seq, type_, data = text.split("\n", 3)
    return Event(id=event_id, job_id=job_id, seq=int(seq), type=type_, data=orjson.loads(data))


def _parse_entry(job_id: str, entry_id: bytes | str, fields: dict[Any, Any]) -> Event:
    def field(name: str) -> str:
        value = fields.get(name.encode(), fields.get(name))
        return value.decode() if isinstance(value, bytes) else str(value)

    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Event(id=eid, job_id=job_id, seq=int(field("s")), type=field("t"),
                 data=orjson.loads(field("d")))


def stream_id_key(event_id: str) -> tuple[int, int]:
    """Stream ids order as (milliseconds, sequence) pairs, not as strings."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


_MAX_ID_PART = 2**64 - 1


def is_valid_stream_id(value: str) -> bool:
    """`ms` or `ms-seq`: ASCII digits, each part an unsigned 64-bit number, as Redis requires.

    Not `str.isdigit`: it accepts `²` and other non-ASCII digits that Redis refuses.
    """
    ms, sep, seq = value.partition("-")
    return _is_id_part(ms) and (not sep or _is_id_part(seq))


def _is_id_part(part: str) -> bool:
    # 20 digits hold any 64-bit number; checking the length first keeps int() cheap.
    return (0 < len(part) <= 20 and part.isascii() and part.isdigit()
            and int(part) <= _MAX_ID_PART)


class AsyncEventLog:
    """Publisher and reader for the API and the workers' event loops."""

    def __init__(self, redis: AsyncRedis, keys: Keys, *, maxlen: int = 10_000,
                 ttl_s: int = 6 * 3600, max_event_bytes: int = 4 * 1024 * 1024,
                 max_stream_bytes: int = 32 * 1024 * 1024) -> None:
        self.redis = redis
        self._script = redis.register_script(_PUBLISH_LUA)
        # Publishes of many jobs in one loop turn share a round trip (pipelines/autopipeline).
        self._publisher = ScriptPipeliner(redis, _PUBLISH_LUA)
        self.keys = keys
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self.max_event_bytes = max_event_bytes
        self.max_stream_bytes = max_stream_bytes

    def _args(self, job_id: str, type_: str, data: dict[str, Any], force: bool,
              terminal: bool, attempt: int | None) -> tuple[list[str], list[Any]]:
        encoded = orjson.dumps(data)
        if len(encoded) > self.max_event_bytes and not (force or terminal):
            raise EventTooLarge(
                f"A '{type_}' event of {len(encoded):,} bytes is over the "
                f"{self.max_event_bytes:,}-byte limit for one event.",
                details={"limit": "event_bytes", "max": self.max_event_bytes,
                         "found": len(encoded)})
        keys = [self.keys.events(job_id), self.keys.seq(job_id), self.keys.cancel(job_id),
                self.keys.event_bytes(job_id)]
        args = [self.keys.channel(job_id), type_, encoded, self.maxlen, self.ttl_s,
                "1" if force else "0", "1" if terminal else "0",
                "" if attempt is None else str(attempt), self.max_stream_bytes]
        return keys, args

    def _result(self, raw: list[Any]) -> tuple[str | None, bool]:
        if len(raw) > 2 and int(raw[2]):
            raise EventStreamFull(
                f"The job's events are over the {self.max_stream_bytes:,}-byte limit for "
                "one job.", details={"limit": "stream_bytes", "max": self.max_stream_bytes})
        event_id = raw[0].decode() if isinstance(raw[0], bytes) else raw[0]
        return (event_id or None), bool(int(raw[1]))


    async def publish(self, job_id: str, type_: str, data: dict[str, Any], *,
                      force: bool = False, terminal: bool = False,
                      attempt: int | None = None) -> tuple[str | None, bool]:
        """Append and announce one event; returns (event id or None if refused, cancelled).

        `attempt` is the publishing worker's attempt: only a cancel of that attempt (or a
        later one) refuses it. Without it (the API), any cancel flag refuses.
        """
        keys, args = self._args(job_id, type_, data, force, terminal, attempt)
        return self._result(await self._publisher.call(keys, args))

    async def is_cancelled(self, job_id: str, attempt: int) -> bool:
        """Whether a cancel covers `attempt`, with the publish script's rule, without publishing."""
        flag = await self.redis.get(self.keys.cancel(job_id))
        if flag is None:
            return False
        try:
            return attempt <= int(flag)
        except ValueError:
            return True

    async def load_script(self) -> None:
        """Make sure Redis has the publish script, for callers that pipeline `publish_into`."""
        await self.redis.script_load(_PUBLISH_LUA)

    def publish_into(self, pipe: Any, job_id: str, type_: str, data: dict[str, Any]) -> None:
        """Queue a publish on `pipe` (a pipeline); the script must be loaded already."""
        keys, args = self._args(job_id, type_, data, False, False, None)
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)

    async def backlog(self, job_id: str, after: str | None = None,
                      count: int = 1000) -> list[Event]:
        """Events after `after` (exclusive), oldest first, at most `count`."""
        start = f"({after}" if after else "-"
        entries = await self.redis.xrange(self.keys.events(job_id), min=start, max="+",
                                          count=count)
        return [_parse_entry(job_id, eid, fields) for eid, fields in entries or ()
                if eid is not None and fields is not None]

    async def last_event(self, job_id: str) -> Event | None:
        """The newest event of the job's log, or None if the log expired or never existed."""
        entries = await self.redis.xrevrange(self.keys.events(job_id), count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        if entry_id is None or fields is None:
            return None
        return _parse_entry(job_id, entry_id, fields)

    async def request_cancel(self, job_id: str, attempt: int, ttl_s: int) -> None:
        """Raise the cancel flag for `attempt` (and every earlier one); later attempts run."""
        await self.redis.set(self.keys.cancel(job_id), str(attempt).encode(), ex=ttl_s)
