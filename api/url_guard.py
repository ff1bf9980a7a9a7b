"""Refuses a URL that holds NUL (`%00`) before any route sees it.

No path or query value can use U+0000, and Postgres' text columns cannot even be asked
about one: asyncpg sends the value and Postgres answers "invalid byte sequence", which
became a 500 on every route that passes a path or query value to a query
(`GET /v1/models/%00`, `?kind=%00`, `?tag=%00`, …). A path with NUL names nothing (404,
as an unknown id does); a query parameter with NUL is a 422 naming it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response


class UrlGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        response = _refusal(scope)
        if response is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket" and (
            "websocket.http.response" not in scope.get("extensions", {})
        ):
            # Without the denial-response extension a handshake can only be closed.
            await send({"type": "websocket.close", "code": 1008, "reason": "NUL in the URL"})
        else:
            await response(scope, receive, send)


def _refusal(scope: Scope) -> Response | None:
    path: str = scope.get("path", "")
    request_id = scope.get("state", {}).get("request_id")
    if "\x00" in path:
        return error_response(path, 404, "RESOURCE_NOT_FOUND", "No such resource.",
                              request_id=request_id)
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query:
        return None
    # Decoded as Starlette decodes query parameters, to name the one that holds NUL.
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            param = name.replace("\x00", "")
            return error_response(path, 422, "VALIDATION_FAILED",
                                  f"Query parameter '{param}' must not contain NUL (%00).",
                                  request_id=request_id, param=param)
    return None
