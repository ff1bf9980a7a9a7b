"""Server-sent events framing that every streamed format shares."""

from __future__ import annotations

from typing import Any

import orjson

# Proxies must neither cache nor buffer an event stream (`X-Accel-Buffering` is nginx's).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A comment line: clients ignore it, proxies with idle timeouts see traffic.
KEEPALIVE_FRAME = b": keep-alive\n\n"


def typed_frame(event_id: str | None, type_: str, data: dict[str, Any]) -> bytes:
    """`id:` (when known, for `Last-Event-ID`), `event: <type>` and `data: {"type": <type>,
    …}`: the shape of the chain and agent streams, whose clients read the type from data."""
    head = b"id: %s\n" % event_id.encode() if event_id else b""
    return head + b"event: %s\ndata: %s\n\n" % (type_.encode(),
                                                orjson.dumps({"type": type_, **data}))
