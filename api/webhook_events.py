"""Webhook subscription events the API raises itself (a job cancelled by request); the
worker raises the rest (workers/webhook_deliveries.py). Deliveries are sent by actor name."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from api.context import Services
from pipelines import webhook_events
from schemas.webhooks import DELIVERY_ROUTE

log = logging.getLogger("switchyard.webhooks")


async def fire(services: Services, owner_id: str,
               events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Record `events` for the owner's subscriptions and send each delivery; never raises
    (the action that raised them has already happened)."""
    try:
        ids = await webhook_events.record(services.autocommit, services.redis, services.keys,
                                          owner_id, events)
        for delivery_id in ids:
            await services.enqueuer.send_to(DELIVERY_ROUTE, delivery_id)
    except Exception:
        log.exception("webhook events %s of owner %s not recorded",
                      [name for name, _ in events], owner_id)
