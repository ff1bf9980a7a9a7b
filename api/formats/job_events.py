"""A job's raw events, as `GET /v1/jobs/{id}/events` (SSE) and its WebSocket send them.

Every event goes out as it is in the log, terminal ones included; a client that sees
`retry` drops what it holds itself, so these writers never report answer content.
"""

from __future__ import annotations

import orjson

from api.formats.sse import KEEPALIVE_FRAME
from schemas.events import JobFailure
from schemas.jobs import Event


def sse_frame(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(), event.type.encode(), orjson.dumps(event.as_dict()))


class EventSseWriter:
    """SSE frames with `id:` (for Last-Event-ID) and `event:`; keep-alives as comments."""

    sent_content = False

    def opening(self) -> bytes:
        # An immediate comment flushes headers through proxies before the first event.
        return KEEPALIVE_FRAME

    def keepalive(self) -> bytes:
        return KEEPALIVE_FRAME

    def event(self, event: Event) -> bytes:
        return sse_frame(event)

    def terminal(self, event: Event) -> bytes:
        return sse_frame(event)

    def error(self, failure: JobFailure) -> None:
        """The log has no event for the stream's own ends: the stream just ends."""


class EventWsWriter:
    """JSON text frames, one per event; keep-alives as `{"type": "ping"}`."""

    sent_content = False

    def opening(self) -> None:
        return None

    def keepalive(self) -> str:
        return '{"type":"ping"}'

    def event(self, event: Event) -> str:
        return orjson.dumps(event.as_dict()).decode()

    def terminal(self, event: Event) -> str:
        return orjson.dumps(event.as_dict()).decode()

    def error(self, failure: JobFailure) -> None:
        """The log has no event for the stream's own ends: the socket just closes."""
