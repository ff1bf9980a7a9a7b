"""Plain-ASGI middleware: request ids with log context, API-key authentication, and a
deadline for request bodies."""

from __future__ import annotations

import asyncio
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import Principal
from api.errors import ApiError, error_response
from api.http_metrics import RESPONSE_STATUS
from api.limits import refuse
from pipelines.errors import RateLimited
from pipelines.logs import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Every response carries `X-Request-ID`: the caller's, if sane, or a fresh one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else (
            uuid.uuid4().hex
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                # For HttpMetricsMiddleware, which so needs no send wrapper of its own.
                state[RESPONSE_STATUS] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", raw_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


Verifier = Callable[[str, Scope], Awaitable[Principal | None]]
# X-RateLimit-* headers for an answer this middleware gives itself (api.limits).
RefusalHeaders = Callable[[Scope], Awaitable[list[tuple[bytes, bytes]]]]


async def _no_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    return []


class AuthMiddleware:
    """Every `/v1` route needs a credential: `Authorization: Bearer …` or `X-API-Key: …`.

    `verify(credential, scope)` maps it to a Principal (or None), or raises RateLimited
    when the client has presented too many invalid credentials (answered 429 before any
    lookup); the scope lets it reach the services the lifespan built. `public_paths` need
    no credential; on
    `optional_paths` a credential is checked when presented (e.g. register, which an admin
    may call when open registration is off). A valid credential of a disabled account is
    refused with 403 `ACCOUNT_DISABLED` (`account_disabled` on OpenAI routes, as Stack
    2.9's clients expect), not 401: the key is right, the account is off.
    """

    def __init__(self, app: ASGIApp, verify: Verifier,
                 public_paths: frozenset[str] = frozenset(),
                 optional_paths: frozenset[str] = frozenset(),
                 refusal_headers: RefusalHeaders = _no_headers) -> None:
        self.app = app
        self.verify = verify
        self.public_paths = public_paths
        self.optional_paths = optional_paths
        self.refusal_headers = refusal_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or not path.startswith("/v1") or (
            path in self.public_paths
        ):
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope)
        if key is None and path in self.optional_paths:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.verify(key, scope) if key else None
        except RateLimited as exc:
            await refuse(scope, receive, send, exc)
            return
        if principal is None or not principal.active:
            if scope["type"] == "websocket" and (
                "websocket.http.response" not in scope.get("extensions", {})
            ):
                # Without the denial-response extension the server can only say 403.
                await send({"type": "websocket.close",
                            "code": 4401 if principal is None else 4403,
                            "reason": "authentication required" if principal is None
                            else "account disabled"})
                return
            status, code, message = (
                (403, "ACCOUNT_DISABLED", "This account has been disabled.") if principal
                else (401, "INVALID_CREDENTIALS", "The API key or session token is invalid.")
                if key else (401, "AUTHENTICATION_REQUIRED",
                             "An API key is required (Authorization: Bearer or X-API-Key).")
            )
            headers = {k.decode(): v.decode() for k, v in await self.refusal_headers(scope)}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            state = scope.get("state", {})
            response = error_response(path, status, code, message,
                                      request_id=state.get("request_id"), headers=headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodyDeadlineMiddleware:
    """A request body must arrive within `timeout_s` of the request's start, else 408 and
    the connection closes.

    uvicorn has no body read timeout, so a client trickling a body held a connection (and
    a request task) for as long as it liked. Only reads while the body is incomplete are
    timed: after it, `receive` waits for a disconnect (streaming responses) unbounded.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(408, "REQUEST_TIMEOUT",
                               f"The request body did not arrive within {self.timeout_s:g} s.",
                               headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


def bootstrap_verifier(admin_key: str | None) -> Verifier:
    """Accepts only the bootstrap admin key, compared in constant time (for tools and tests;
    the app verifies with api.auth.Authenticator)."""
    expected = admin_key.encode() if admin_key else None
    admin = Principal(id="admin", role="admin", key_id="bootstrap")

    async def verify(key: str, scope: Scope) -> Principal | None:
        if expected is not None and hmac.compare_digest(key.encode(), expected):
            return admin
        return None

    return verify
