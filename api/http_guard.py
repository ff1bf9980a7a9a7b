"""uvicorn's httptools protocol with a bound on the request head's size and time.

uvicorn (0.54) bounds neither with httptools: the head is buffered until it is complete,
however large (a 20 MB header grew the process by 250 MB), and nothing times out a client
that trickles its head (its keep-alive timer only runs between requests). `--http h11`
has `--h11-max-incomplete-event-size` but parses in pure Python, several times slower.

So this subclass reuses uvicorn's own options for both bounds: the head may be at most
`--h11-max-incomplete-event-size` bytes (else 431 and the connection closes) and must be
complete within `--timeout-keep-alive` seconds of its first byte (or of the connection
opening), else the connection closes. Run with
`uvicorn --http api.http_guard:GuardedHttpToolsProtocol` (api/devservices.web_command).
Bodies have their own deadline in the app (api/middleware.BodyDeadlineMiddleware).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# h11's own default for --h11-max-incomplete-event-size.
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
_TOO_LARGE = b"Request header fields too large."


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._head_timeout_s = float(config.timeout_keep_alive)
        self._head_bytes: int | None = None  # None: not inside a request head
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Parse first: a chunk that completes the head may carry body bytes too, which do
        # not count. The parser buffers an unfinished head, so it holds at most one chunk
        # past the limit before the refusal.
        super().data_received(data)
        if self._head_bytes is None or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self._max_head_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:  # a later request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _end_head(self) -> None:
        self._head_bytes = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_head(self) -> None:
        self._end_head()
        self.logger.warning("Request head over %d bytes; closing.", self._max_head_bytes)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _TOO_LARGE)
        self.transport.close()
