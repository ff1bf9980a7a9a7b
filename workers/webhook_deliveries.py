"""Webhook subscriptions in the worker: recording an owner's events, and the actor that
delivers each one (pipelines/webhook_events.py does the work)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from pipelines import webhook_events
from pipelines.db import webhooks as webhooks_db
from pipelines.outbound import OutboundPolicy
from pipelines.secretbox import WEBHOOK_SECRETS, secret_box
from schemas.webhooks import DELIVERY_ROUTE
from workers.resources import Resources, current

log = logging.getLogger("switchyard.webhooks")


async def fire(res: Resources, owner_id: str,
               events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Record `events` for the owner's subscriptions and send each delivery.

    Never raises: a webhook must not fail the job or turn it reports on."""
    try:
        ids = await webhook_events.record(res.aautocommit, res.aredis, res.keys, owner_id,
                                          events)
        if ids:
            # Dramatiq's enqueue is synchronous (a Redis round trip each): off the loop.
            await asyncio.to_thread(_send, ids)
    except Exception:
        log.exception("webhook events %s of owner %s not recorded",
                      [name for name, _ in events], owner_id)


def _send(delivery_ids: list[str]) -> None:
    for delivery_id in delivery_ids:
        deliver_subscription_event.send(delivery_id)


def resend_lost(broker: dramatiq.Broker, stale_after_s: float, limit: int = 500) -> int:
    """Send again the pending deliveries whose message is gone (a worker died between
    recording and sending them, or Redis lost it); returns how many. Called by the sweeper.

    With Redis, a delivery whose message is still queued, delayed (a retry waiting out its
    backoff) or in flight is left alone. RabbitMQ cannot list its messages, and gives a dead
    worker's back by itself: nothing is re-sent there.
    """
    if isinstance(broker, RabbitmqBroker):
        return 0
    res = current()
    with res.engine.begin() as conn:
        claimed = [str(row.id) for row in conn.execute(
            webhooks_db.claim_lost_deliveries(stale_after_s, limit))]
    if not claimed:
        return 0
    queue = DELIVERY_ROUTE.queue_name
    in_broker: set[str] = set()
    for name in (queue, f"{queue}.DQ"):
        for raw in res.redis.hvals(res.keys.dramatiq_messages(name)):
            message = json.loads(raw)
            if message.get("actor_name") == DELIVERY_ROUTE.actor_name:
                in_broker.add(str((message.get("args") or [None])[0]))
    lost = [delivery_id for delivery_id in claimed if delivery_id not in in_broker]
    _send(lost)
    return len(lost)


# Attempts are counted on the delivery row against WEBHOOK_MAX_ATTEMPTS (at most 50); this
# only keeps Dramatiq's own limit out of the way.
_MAX_RETRIES = 60


@dramatiq.actor(actor_name=DELIVERY_ROUTE.actor_name, queue_name=DELIVERY_ROUTE.queue_name,
                max_retries=_MAX_RETRIES)
def deliver_subscription_event(delivery_id: str) -> None:
    """POSTs one delivery and records the attempt on its row: delivered, failed (a refused
    URL, a 4xx, or WEBHOOK_MAX_ATTEMPTS spent), or still pending and retried after
    WEBHOOK_BACKOFF_S, doubling. Safe to re-run: a delivery no longer pending is skipped
    (a receiver may still see one twice: dedupe on X-Switchyard-Delivery)."""
    res = current()
    settings = res.settings
    with res.autocommit.connect() as conn:
        row = conn.execute(webhooks_db.delivery_with_target(delivery_id)).first()
    if row is None or row.status != "pending":
        return
    key = settings.switchyard_secret_key
    secret = secret_box(key.get_secret_value() if key else None,
                        WEBHOOK_SECRETS).open(row.secret_sealed)
    if secret is None:
        outcome = webhook_events.Attempt(
            "failed", error="the signing secret cannot be opened (SWITCHYARD_SECRET_KEY "
                            "changed since the subscription was made)")
    else:
        outcome = webhook_events.attempt(
            str(row.id), row.url, dict(row.payload), secret,
            policy=OutboundPolicy.of(settings.outbound_allow_private,
                                     settings.outbound_allowed_hosts),
            timeout_s=settings.webhook_timeout_s)
    status: str = outcome.outcome
    if status == "retry":
        status = "failed" if row.attempts + 1 >= settings.webhook_max_attempts else "pending"
    with res.autocommit.connect() as conn:
        attempts = conn.execute(webhooks_db.record_attempt(
            delivery_id, status=status, status_code=outcome.status_code,
            error=outcome.error)).scalar()
    if attempts is None or status != "pending":
        if status == "failed":
            log.warning("webhook delivery %s failed: %s", delivery_id, outcome.error)
        return
    delay_s = webhook_events.backoff_s(attempts, settings.webhook_backoff_s,
                                       settings.webhook_max_backoff_s)
    raise dramatiq.Retry(f"webhook delivery: {outcome.error}", delay=int(delay_s * 1000))
