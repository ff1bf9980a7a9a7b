"""A job's raw events over SSE and WebSocket: `GET /v1/jobs/{id}/events` and its `/ws`.

Both resume after `Last-Event-ID` (header, or `last_event_id` in the query), checked before
the stream starts so a bad one is a 400, not a stream that aborts and makes EventSource
clients reconnect in a loop. Hanging up never cancels the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from sqlalchemy.engine import Row
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.bodies import loads_bounded
from api.context import principal, services
from api.errors import ApiError, error_response, status_for
from api.formats.job_events import EventSseWriter, EventWsWriter
from api.job_replies import StreamResponse
from api.job_stream import JobStream
from pipelines.db import jobs as jobs_db
from pipelines.errors import DomainError
from pipelines.events import is_valid_stream_id
from schemas.jobs import TERMINAL_EVENT_TYPES, Event


def _last_event_id(conn: HTTPConnection) -> str | None:
    value = conn.headers.get("last-event-id") or conn.query_params.get("last_event_id")
    if value is None:
        return None
    if not is_valid_stream_id(value):
        raise ApiError(400, "VALIDATION_FAILED", "Last-Event-ID is not an event id of this job.")
    return value


def _stand_in(conn: HTTPConnection, job_id: str) -> Callable[[], Awaitable[Event | None]]:
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


async def _follow(conn: HTTPConnection, job_id: str, after: str | None) -> JobStream:
    svc = services(conn)
    return await JobStream.resume(svc.hub, svc.events, job_id, after=after,
                                  stand_in=_stand_in(conn, job_id),
                                  keepalive_s=svc.settings.sse_keepalive_s,
                                  lifetime_s=svc.settings.max_sse_lifetime_s)


async def job_event_stream(request: Request, row: Row[Any]) -> Response:
    last_id = _last_event_id(request)
    stream = await _follow(request, str(row.id), last_id)
    return StreamResponse(stream, EventSseWriter(), {})


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
    stream = await _follow(websocket, job_id, last_id)

    async def send_events(cancel: anyio.CancelScope) -> None:
        async for frame in stream.frames(EventWsWriter()):
            await websocket.send_text(frame)
        await websocket.close(code=1000)
        cancel.cancel()

    async def answer_pings(cancel: anyio.CancelScope) -> None:
        try:
            while True:
                try:
                    # Bounded like every other JSON input; a frame that is not a ping (or
                    # not readable) is ignored rather than ending the stream.
                    message = loads_bounded(await websocket.receive_text())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(message, dict) and message.get("type") == "ping":
                    await websocket.send_text('{"type":"pong"}')
        except (WebSocketDisconnect, ValueError, KeyError):
            cancel.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_events, tg.cancel_scope)
            tg.start_soon(answer_pings, tg.cancel_scope)
    finally:
        await stream.close()
