"""Webhook subscriptions: an owner's URL, the events it wants, and each delivery's state.

A subscription's events are POSTed as `{event, timestamp, data}`, signed with
`X-Switchyard-Signature` under the subscription's own secret (shown once, on create).
Stack 2.9's clients send `webhook_url`; `url` is the same field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from schemas.jobs import JobRoute

WEBHOOK_EVENTS = ("generation.done", "tool_call.started", "tool_call.completed",
                  "tool_call.failed", "job.succeeded", "job.failed", "job.cancelled")
# The job status that ends a job -> its event.
JOB_EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed",
              "cancelled": "job.cancelled"}
DeliveryStatus = Literal["pending", "delivered", "failed"]

# Not a job kind: one delivery of a subscription's event, retried with backoff.
DELIVERY_ROUTE = JobRoute(actor_name="deliver_subscription_event", queue_name="default")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(min_length=1, max_length=2048,
                     validation_alias=AliasChoices("url", "webhook_url"))
    events: list[str] = Field(min_length=1, max_length=len(WEBHOOK_EVENTS) * 2)
    # Given: the receiver's own; omitted: generated and returned once.
    secret: str | None = Field(default=None, min_length=16, max_length=256)
    description: str | None = Field(default=None, max_length=500)

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = [name for name in events if name not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown event '{unknown[0]}'; the events are "
                             f"{', '.join(WEBHOOK_EVENTS)}")
        return list(dict.fromkeys(events))


class WebhookRead(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[str]
    description: str | None
    created_at: datetime
    # Only in the answer to POST /v1/webhooks: the signing secret, never shown again.
    secret: str | None = None


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookRead]


class DeliveryRead(BaseModel):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    webhook_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryRead]
