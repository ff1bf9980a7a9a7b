"""Admin: the audit log of operator actions (`GET /v1/admin/audit`), and `record_action`,
which every acting admin route calls after it changed something (with the actor's id and
role)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_read
from api.bodies import int_query
from api.bodies import json_response as json
from api.context import principal, services
from api.errors import ApiError
from api.openapi import doc
from pipelines.audit import AuditLog
from pipelines.events import is_valid_stream_id
from schemas.audit import AuditEntryRead, AuditList


async def record_action(conn: HTTPConnection, action: str, target: str,
                        details: dict[str, Any] | None = None) -> None:
    """Write who did `action` to `target` into the audit log."""
    who = principal(conn)
    actor = f"{who.id} (key {who.key_id})" if who.key_id else who.id
    svc = services(conn)
    await AuditLog(svc.redis, svc.keys).record(actor, action, target, details,
                                               actor_id=who.id, actor_role=who.role)


@doc("Operator actions, newest first (retry, cancel, bulk, pause, resume, purge)",
     response=AuditList, tags=["admin"], query={"limit": "integer", "cursor": "string"})
async def audit(request: Request) -> Response:
    require_read(request)
    limit = int_query(request, "limit", 50, 1, 500)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not is_valid_stream_id(cursor):
        raise ApiError(422, "VALIDATION_FAILED", "cursor is not valid.", param="cursor")
    svc = services(request)
    entries = await AuditLog(svc.redis, svc.keys).newest(limit + 1, before=cursor)
    page = entries[:limit]
    return json(AuditList(
        data=[AuditEntryRead(id=e.id, at=dt.datetime.fromtimestamp(e.at_ms / 1000, tz=dt.UTC),
                             actor=e.actor, actor_id=e.actor_id or None,
                             actor_role=e.actor_role or None, action=e.action, target=e.target,
                             details=e.details) for e in page],
        next_cursor=page[-1].id if len(entries) > limit else None))


routes = [Route("/v1/admin/audit", audit, methods=["GET"])]
