"""Server-sent events framing that every streamed format shares."""

from __future__ import annotations

# Proxies must neither cache nor buffer an event stream (`X-Accel-Buffering` is nginx's).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A comment line: clients ignore it, proxies with idle timeouts see traffic.
KEEPALIVE_FRAME = b": keep-alive\n\n"
