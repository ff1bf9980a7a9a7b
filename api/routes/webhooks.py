"""Webhook subscriptions (`POST/GET /v1/webhooks`, `GET|DELETE /v1/webhooks/{id}`) and
their deliveries (`GET /v1/webhooks/{id}/deliveries`), owned like every resource: another
user's id answers 404.

The URL is checked with the outbound policy when the subscription is made (a private,
loopback, link-local or metadata address is a 422 unless the operator allows it), and
again at every delivery. The signing secret is returned once, on create.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import int_query, json_response, parse, path_id
from api.context import principal, services
from api.errors import ApiError
from api.openapi import doc
from pipelines import outbound, webhook_events
from pipelines.db import webhooks as webhooks_db
from pipelines.errors import NotFound
from pipelines.secretbox import WEBHOOK_SECRETS, secret_box
from schemas.webhooks import (
    DeliveryList,
    DeliveryRead,
    WebhookCreate,
    WebhookList,
    WebhookRead,
)

_MAX_PAGE = 100
_STATUSES = ("pending", "delivered", "failed")


class WebhookNotFound(NotFound): ...


def _webhook_id(request: Request) -> str:
    return path_id(request, "webhook_id", WebhookNotFound, "webhook")


def _read(row: Row[Any], secret: str | None = None) -> WebhookRead:
    return WebhookRead(id=str(row.id), url=row.url, events=list(row.events),
                       description=row.description, created_at=row.created_at,
                       secret=secret)


def _delivery(row: Row[Any]) -> DeliveryRead:
    return DeliveryRead(id=str(row.id), webhook_id=str(row.webhook_id), event=row.event,
                        status=row.status, attempts=row.attempts,
                        last_status_code=row.last_status_code, last_error=row.last_error,
                        payload=dict(row.payload), created_at=row.created_at,
                        updated_at=row.updated_at, last_attempt_at=row.last_attempt_at,
                        delivered_at=row.delivered_at)


@doc("Subscribe a URL to events (generation.done, tool_call.started|completed|failed, "
     "job.succeeded|failed|cancelled); the signing secret is shown only in this answer",
     body=WebhookCreate, response=WebhookRead, status=201, tags=["webhooks"])
async def create_webhook(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    body = await parse(request, WebhookCreate, svc.settings.max_json_body_bytes)
    settings = svc.settings
    await outbound.check_async(body.url, outbound.OutboundPolicy.of(
        settings.outbound_allow_private, settings.outbound_allowed_hosts))
    url = str(outbound.parse_url(body.url))  # userinfo and fragment dropped
    secret = body.secret or webhook_events.new_secret()
    key = settings.switchyard_secret_key
    sealed = secret_box(key.get_secret_value() if key else None, WEBHOOK_SECRETS).seal(secret)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(webhooks_db.insert_subscription(
            webhook_id=webhooks_db.new_id(), owner_id=owner_id, url=url, events=body.events,
            secret_sealed=sealed, description=body.description))).one()
    await webhook_events.subscribed(svc.redis, svc.keys, owner_id)
    return json_response(_read(row, secret), status=201)


@doc("List the caller's webhook subscriptions, newest first (limit, offset)",
     response=WebhookList, tags=["webhooks"], query={"limit": "integer", "offset": "integer"})
async def list_webhooks(request: Request) -> Response:
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 1_000_000)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(webhooks_db.list_subscriptions(
            principal(request).owner_id, limit, offset))).all()
    return json_response(WebhookList(data=[_read(row) for row in rows]))


async def _load(request: Request) -> Row[Any]:
    webhook_id = _webhook_id(request)
    async with services(request).autocommit.connect() as conn:
        row = (await conn.execute(webhooks_db.get_subscription(
            webhook_id, principal(request).owner_id))).first()
    if row is None:
        raise WebhookNotFound(f"No webhook with id '{webhook_id}'.")
    return row


@doc("One webhook subscription (without its secret)", response=WebhookRead,
     tags=["webhooks"])
async def get_webhook(request: Request) -> Response:
    return json_response(_read(await _load(request)))


@doc("Delete a webhook subscription and its deliveries; nothing more is sent to it",
     status=204, tags=["webhooks"])
async def delete_webhook(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    webhook_id = _webhook_id(request)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(webhooks_db.delete_subscription(webhook_id,
                                                                  owner_id))).first()
    if row is None:
        raise WebhookNotFound(f"No webhook with id '{webhook_id}'.")
    await webhook_events.unsubscribed(svc.redis, svc.keys, owner_id)
    return Response(status_code=204)


@doc("A webhook's deliveries, newest first, with their status (pending, delivered, "
     "failed), attempts and last answer (status, limit, offset)", response=DeliveryList,
     tags=["webhooks"],
     query={"status": "string", "limit": "integer", "offset": "integer"})
async def list_deliveries(request: Request) -> Response:
    row = await _load(request)
    status = request.query_params.get("status")
    if status is not None and status not in _STATUSES:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"status must be one of {', '.join(_STATUSES)}.", param="status")
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 1_000_000)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(webhooks_db.list_deliveries(
            str(row.id), principal(request).owner_id, limit, offset, status))).all()
    return json_response(DeliveryList(data=[_delivery(r) for r in rows]))


routes = [
    Route("/v1/webhooks", create_webhook, methods=["POST"]),
    Route("/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/v1/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
    Route("/v1/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
    Route("/v1/webhooks/{webhook_id}/deliveries", list_deliveries, methods=["GET"]),
]
