"""Job events to clients: SSE frames and WebSocket JSON, fed by the same `follow` generator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.context import principal, services
from api.errors import ApiError, error_response, status_for
from api.streams import follow
from pipelines.db import jobs as jobs_db
from pipelines.errors import DomainError
from pipelines.events import is_valid_stream_id
from schemas.jobs import TERMINAL_EVENT_TYPES, Event

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_FRAME = b": keep-alive\n\n"


def sse_frame(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(), event.type.encode(), orjson.dumps(event.as_dict())
    )


def _last_event_id(conn: Request | WebSocket) -> str | None:
    value = conn.headers.get("last-event-id") or conn.query_params.get("last_event_id")
    if value is None:
        return None
    if not is_valid_stream_id(value):
        raise ApiError(400, "VALIDATION_FAILED", "Last-Event-ID is not an event id of this job.")
    return value


def _stand_in(conn: Request | WebSocket, job_id: str) -> Callable[[], Awaitable[Event | None]]:
    """For a job whose event log expired: a terminal event made from the job row."""

    async def make() -> Event | None:
        async with services(conn).autocommit.connect() as db:
            row = (await db.execute(*jobs_db.get(job_id, principal(conn).owner_id))).first()
        if row is None or row.status not in TERMINAL_EVENT_TYPES:
            return None
        millis = int(row.finished_at.timestamp() * 1000) if row.finished_at else 0
        data: dict[str, Any] = (
            {"result": row.result} if row.status == "succeeded" else {"error": row.error}
        )
        return Event(id=f"{millis}-0", job_id=job_id, seq=0, type=row.status, data=data)

    return make


def job_event_stream(request: Request, row: Row[Any]) -> StreamingResponse:
    svc = services(request)
    job_id = str(row.id)
    last_id = _last_event_id(request)

    async def frames() -> Any:
        # An immediate comment flushes headers through proxies before the first event.
        yield KEEPALIVE_FRAME
        async for event in follow(svc.hub, svc.events, job_id, last_event_id=last_id,
                                  keepalive_s=svc.settings.sse_keepalive_s,
                                  max_lifetime_s=svc.settings.max_sse_lifetime_s,
                                  when_log_missing=_stand_in(request, job_id)):
            yield KEEPALIVE_FRAME if event is None else sse_frame(event)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _refuse(websocket: WebSocket, exc: ApiError | DomainError) -> None:
    """Answer the handshake with the same HTTP error as the SSE route, where the server can.

    Without the ASGI denial-response extension a close before accept becomes a bare 403,
    so the close code (4000 + status) is the only hint left.
    """
    if isinstance(exc, ApiError):
        status, code, message = exc.status, exc.code, exc.message
    else:
        status, code, message = status_for(exc), exc.code, exc.message
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(
            websocket.url.path, status, code, message,
            request_id=websocket.scope.get("state", {}).get("request_id")))
    else:
        await websocket.close(code=4000 + status, reason=message[:120])


async def job_event_websocket(
    websocket: WebSocket,
    job_id_of: Callable[[WebSocket], str],
    load: Callable[[WebSocket, str], Awaitable[Row[Any]]],
) -> None:
    """Events as JSON text frames; `{"type": "ping"}` from the client gets a pong."""
    try:
        job_id = job_id_of(websocket)
        await load(websocket, job_id)
        last_id = _last_event_id(websocket)
    except (ApiError, DomainError) as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    svc = services(websocket)

    async def send_events(cancel: anyio.CancelScope) -> None:
        async for event in follow(svc.hub, svc.events, job_id, last_event_id=last_id,
                                  keepalive_s=svc.settings.sse_keepalive_s,
                                  max_lifetime_s=svc.settings.max_sse_lifetime_s,
                                  when_log_missing=_stand_in(websocket, job_id)):
            if event is None:
                await websocket.send_text('{"type":"ping"}')
            else:
                await websocket.send_text(orjson.dumps(event.as_dict()).decode())
        await websocket.close(code=1000)
        cancel.cancel()

    async def answer_pings(cancel: anyio.CancelScope) -> None:
        try:
            while True:
                message = await websocket.receive_json()
                if isinstance(message, dict) and message.get("type") == "ping":
                    await websocket.send_text('{"type":"pong"}')
        except (WebSocketDisconnect, ValueError, KeyError):
            cancel.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(send_events, tg.cancel_scope)
        tg.start_soon(answer_pings, tg.cancel_scope)
