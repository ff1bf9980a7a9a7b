"""Webhook subscriptions and their deliveries: the tables (migration 0013_webhooks) and
every SQL statement on them.

Owned like every resource: reads and writes name the owner. A subscription's secret is
stored sealed (pipelines/secretbox.py, WEBHOOK_SECRETS): the worker must open it to sign.
Recording an event is one statement whatever the number of subscriptions: it inserts a
pending delivery for each of the owner's subscriptions that wants the event (found through
the owner index) and returns their ids, which are then sent to the delivery actor.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Insert,
    Integer,
    Select,
    Table,
    Text,
    TextClause,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.sql.dml import ReturningDelete, ReturningUpdate

from pipelines.db.tables import metadata

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("secret_sealed", Text, nullable=False),
    Column("description", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("webhook_id", UUID(as_uuid=False),
           ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
)

_PUBLIC_COLUMNS = [c for c in webhook_subscriptions.c if c.name != "secret_sealed"]


def new_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ subscriptions

def insert_subscription(*, webhook_id: str, owner_id: str, url: str, events: list[str],
                        secret_sealed: str, description: str | None) -> Insert:
    return (insert(webhook_subscriptions)
            .values(id=webhook_id, owner_id=owner_id, url=url, events=events,
                    secret_sealed=secret_sealed, description=description)
            .returning(*_PUBLIC_COLUMNS))


def get_subscription(webhook_id: str, owner_id: str) -> Select:
    return select(*_PUBLIC_COLUMNS).where(webhook_subscriptions.c.id == webhook_id,
                                          webhook_subscriptions.c.owner_id == owner_id)


def list_subscriptions(owner_id: str, limit: int, offset: int) -> Select:
    return (select(*_PUBLIC_COLUMNS).where(webhook_subscriptions.c.owner_id == owner_id)
            .order_by(webhook_subscriptions.c.created_at.desc(),
                      webhook_subscriptions.c.id.desc())
            .limit(limit).offset(offset))


def delete_subscription(webhook_id: str, owner_id: str) -> ReturningDelete[Any]:
    return (delete(webhook_subscriptions)
            .where(webhook_subscriptions.c.id == webhook_id,
                   webhook_subscriptions.c.owner_id == owner_id)
            .returning(webhook_subscriptions.c.id))


def has_subscriptions(owner_id: str) -> Select:
    """Whether the owner has any subscription (one probe of the owner index)."""
    return select(exists().where(webhook_subscriptions.c.owner_id == owner_id))


# ------------------------------------------------------------------ deliveries

_RECORD = text("""
INSERT INTO webhook_deliveries (id, webhook_id, owner_id, event, payload)
SELECT gen_random_uuid(), s.id, s.owner_id, e.event,
       jsonb_build_object('event', e.event, 'timestamp', CAST(:timestamp AS text),
                          'data', e.data)
  FROM webhook_subscriptions AS s
  JOIN jsonb_to_recordset(CAST(:events AS jsonb)) AS e(event text, data jsonb)
    ON e.event = ANY(s.events)
 WHERE s.owner_id = :owner_id
RETURNING id
""").bindparams(bindparam("events", type_=JSONB))


def record_events(owner_id: str, timestamp: str,
                  events: list[dict[str, Any]]) -> tuple[TextClause, dict[str, Any]]:
    """A pending delivery per (subscription of the owner, event it wants); yields their ids.

    `events` are `{"event": name, "data": {...}}`; every payload gets `timestamp`.
    """
    return _RECORD, {"owner_id": owner_id, "timestamp": timestamp, "events": events}


def delivery_with_target(delivery_id: str) -> Select:
    """A delivery with its subscription's URL and sealed secret (no row: it is gone)."""
    d, s = webhook_deliveries, webhook_subscriptions
    return (select(d.c.id, d.c.event, d.c.payload, d.c.status, d.c.attempts, s.c.url,
                   s.c.secret_sealed)
            .join(s, s.c.id == d.c.webhook_id).where(d.c.id == delivery_id))


def record_attempt(delivery_id: str, *, status: str, status_code: int | None,
                   error: str | None) -> ReturningUpdate[Any]:
    """One attempt's outcome on a delivery still pending; yields its attempt count."""
    d = webhook_deliveries
    values: dict[str, Any] = {"status": status, "attempts": d.c.attempts + 1,
                              "last_status_code": status_code, "last_error": error,
                              "last_attempt_at": func.now(), "updated_at": func.now()}
    if status == "delivered":
        values["delivered_at"] = func.now()
    return (update(d).where(d.c.id == delivery_id, d.c.status == "pending").values(**values)
            .returning(d.c.attempts))


def claim_lost_deliveries(stale_after_s: float, limit: int) -> ReturningUpdate[Any]:
    """Pending deliveries untouched for `stale_after_s` (their message may be lost): each
    is claimed by one sweeper (SKIP LOCKED) and touched, so the next pass leaves it for
    as long again; yields their ids."""
    d = webhook_deliveries
    stale = (select(d.c.id)
             .where(d.c.status == "pending",
                    d.c.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0,
                                                                     stale_after_s))
             .limit(limit).with_for_update(skip_locked=True))
    return (update(d).where(d.c.id.in_(stale.scalar_subquery()))
            .values(updated_at=func.now()).returning(d.c.id))


def list_deliveries(webhook_id: str, owner_id: str, limit: int, offset: int,
                    status: str | None = None) -> Select:
    d = webhook_deliveries
    query = select(d).where(d.c.webhook_id == webhook_id, d.c.owner_id == owner_id)
    if status is not None:
        query = query.where(d.c.status == status)
    return (query.order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit)
            .offset(offset))
