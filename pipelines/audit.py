"""The operators' audit log: every retry, cancel, pause, resume and purge an operator does.

A capped Redis Stream (`Keys.audit`, the newest AUDIT_MAXLEN entries): one XADD per action,
read newest first with the stream id as the paging cursor. Redis rather than a table:
actions are rare, the log is for "who did what lately", and it needs no migration; a
deployment that must keep it for good should ship it to its log store (each action is
also logged at INFO on `switchyard.audit`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from pipelines.keys import Keys

AUDIT_MAXLEN = 10_000
log = logging.getLogger("switchyard.audit")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    # Who acted, apart: the user id and their role then (empty in entries written before
    # roles were recorded).
    actor_id: str = ""
    actor_role: str = ""

    @property
    def at_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


class AuditLog:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.audit()

    async def record(self, actor: str, action: str, target: str,
                     details: dict[str, Any] | None = None, *, actor_id: str = "",
                     actor_role: str = "") -> None:
        """Append one action (`actor`, a user with `actor_role`, did `action` to `target`)."""
        log.info("%s (%s) %s %s", actor, actor_role, action, target,
                 extra={"details": details or {}})
        await self._redis.xadd(self._key, {"actor": actor, "actor_id": actor_id,
                                           "actor_role": actor_role, "action": action,
                                           "target": target,
                                           "details": orjson.dumps(details or {})},
                               maxlen=AUDIT_MAXLEN, approximate=True)

    async def newest(self, limit: int, before: str | None = None) -> list[AuditEntry]:
        """At most `limit` entries, newest first, older than the entry id `before`."""
        top = f"({before}" if before else "+"
        raw = await self._redis.xrevrange(self._key, max=top, min="-", count=limit)
        return [_entry(entry_id, fields) for entry_id, fields in raw or ()
                if entry_id is not None and fields is not None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> AuditEntry:
    data = {_text(k): v for k, v in fields.items()}
    return AuditEntry(id=_text(entry_id), actor=_text(data.get("actor", "")),
                      action=_text(data.get("action", "")),
                      target=_text(data.get("target", "")),
                      details=orjson.loads(data.get("details") or b"{}"),
                      actor_id=_text(data.get("actor_id", "")),
                      actor_role=_text(data.get("actor_role", "")))
