"""Webhook subscriptions at work: recording an owner's events as deliveries, and one
delivery attempt.

Recording runs where events happen (a job's end in the worker, a cancel in the API, an
agent's tool call), so owners without subscriptions must cost next to nothing: a Redis key
per owner caches "has subscriptions" ("1"/"0", expiring). Creating a subscription sets it
to "1" after the commit; deleting one removes it; a miss asks Postgres and caches the
answer with SET NX, so a stale "0" written by a miss can never overwrite the "1" of a
subscription committed meanwhile. With subscriptions, one statement inserts the pending
deliveries (pipelines/db/webhooks.py) and their ids go to the delivery actor.

A delivery is `{event, timestamp, data}` POSTed through pipelines/outbound.py (checked and
pinned at delivery time too, against DNS rebinding), signed like job webhooks
(`X-Switchyard-Signature: sha256=<HMAC>`) with the subscription's own secret, with
`X-Switchyard-Event` and `X-Switchyard-Delivery` (the delivery id, to dedupe on).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines import outbound
from pipelines.db import webhooks as webhooks_db
from pipelines.errors import HostNotResolved, UrlNotAllowed
from pipelines.keys import Keys
from pipelines.webhooks import SIGNATURE_HEADER, sign

log = logging.getLogger("switchyard.webhooks")

# How long an owner's "has subscriptions" answer is trusted when nothing changes it.
OWNER_FLAG_TTL_S = 300
EVENT_HEADER = "X-Switchyard-Event"
DELIVERY_HEADER = "X-Switchyard-Delivery"
_ERROR_CHARS = 500


def new_secret() -> str:
    """A signing secret for a subscription created without one."""
    return "whsec_" + secrets.token_urlsafe(32)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def owner_subscribes(engine: AsyncEngine, redis: Redis, keys: Keys,
                           owner_id: str) -> bool:
    """Whether `owner_id` has any subscription: one Redis read, Postgres only on a miss."""
    key = keys.webhook_owner(owner_id)
    cached = await redis.get(key)
    if cached is not None:
        return cached in (b"1", "1")
    async with engine.connect() as conn:
        has = bool((await conn.execute(webhooks_db.has_subscriptions(owner_id))).scalar())
    await redis.set(key, b"1" if has else b"0", ex=OWNER_FLAG_TTL_S, nx=True)
    return has


async def subscribed(redis: Redis, keys: Keys, owner_id: str) -> None:
    """After a subscription's commit: the owner's events are recorded from now on."""
    await redis.set(keys.webhook_owner(owner_id), b"1", ex=OWNER_FLAG_TTL_S)


async def unsubscribed(redis: Redis, keys: Keys, owner_id: str) -> None:
    """After a subscription's deletion: the next event asks Postgres again."""
    await redis.delete(keys.webhook_owner(owner_id))


async def record(engine: AsyncEngine, redis: Redis, keys: Keys, owner_id: str,
                 events: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Pending deliveries for `events` ((name, data) pairs) to the owner's subscriptions
    that want them; returns their ids, for the caller to send to the delivery actor.

    `engine` must commit each statement itself (an AUTOCOMMIT engine)."""
    if not events or not await owner_subscribes(engine, redis, keys, owner_id):
        return []
    body = [{"event": name, "data": data} for name, data in events]
    async with engine.connect() as conn:
        rows = (await conn.execute(*webhooks_db.record_events(owner_id, now_iso(),
                                                              body))).all()
    return [str(row.id) for row in rows]


Outcome = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None


def attempt(delivery_id: str, url: str, payload: dict[str, Any], secret: str, *,
            policy: outbound.OutboundPolicy, timeout_s: float,
            client: httpx.Client | None = None,
            resolve: outbound.Resolver | None = None) -> Attempt:
    """POST one delivery: a 2xx is delivered, a 4xx other than 408/429 is final (the
    receiver refused it), a refused URL is final, anything else may be retried."""
    try:
        target = outbound.check(url, policy, resolve)
    except HostNotResolved as exc:
        return Attempt("retry", error=exc.message[:_ERROR_CHARS])
    except UrlNotAllowed as exc:
        return Attempt("failed", error=exc.message[:_ERROR_CHARS])
    body = orjson.dumps(payload)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
               EVENT_HEADER: str(payload.get("event", "")), DELIVERY_HEADER: delivery_id,
               "User-Agent": "Switchyard-Webhook/1"}
    try:
        response = outbound.post(target, content=body, headers=headers, timeout_s=timeout_s,
                                 client=client)
    except httpx.HTTPError as exc:
        return Attempt("retry", error=f"request failed: {type(exc).__name__}")
    code = response.status_code
    if 200 <= code < 300:
        return Attempt("delivered", status_code=code)
    error = f"receiver answered {code}"
    if code >= 500 or code in (408, 429):
        return Attempt("retry", status_code=code, error=error)
    return Attempt("failed", status_code=code, error=error)


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """The wait before attempt `attempts + 1`: `base_s` doubling, at most `max_s`."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))
