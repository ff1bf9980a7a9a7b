"""The ONLY place that maps errors to HTTP statuses and to each route family's wire format.

Own routes answer `{"error": {code, message, details, request_id}}`; OpenAI-format routes
answer OpenAI's error shape and Anthropic-format routes Anthropic's, because the unchanged
SDKs parse those. No stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines import errors as domain

log = logging.getLogger("switchyard.api")


class ApiError(Exception):
    """An error the edge itself detects (bad body, bad auth), with its status and code."""

    def __init__(self, status: int, code: str, message: str, *, details: Any = None,
                 headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.param = param


STATUS: dict[type[domain.DomainError], int] = {
    domain.NotFound: 404,
    domain.ModelNotFound: 404,
    domain.ModelUnavailable: 503,
    domain.InvalidInput: 422,
    domain.Conflict: 409,
    domain.JobCancelled: 409,
    domain.InvalidCredentials: 401,
    domain.PermissionDenied: 403,
    domain.RateLimited: 429,
    domain.UnsupportedFileType: 415,
    domain.EmptyDocument: 422,
    domain.CorruptDocument: 422,
    domain.DocumentTooLarge: 413,
    # OpenAI and Anthropic both answer 400 to max_tokens above the model's limit.
    domain.MaxTokensTooLarge: 400,
}

_OPENAI_PREFIXES = ("/v1/chat/", "/v1/models", "/v1/embeddings", "/v1/completions")
_ANTHROPIC_PREFIXES = ("/v1/messages",)

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "invalid_request_error",
                 409: "invalid_request_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 415: "invalid_request_error",
                    422: "invalid_request_error", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}
_OPENAI_CODES = {"MODEL_NOT_FOUND": "model_not_found", "AUTHENTICATION_REQUIRED": "invalid_api_key",
                 "INVALID_CREDENTIALS": "invalid_api_key",
                 "RATE_LIMIT_EXCEEDED": "rate_limit_exceeded",
                 "TOKEN_BUDGET_EXCEEDED": "insufficient_quota"}


def wire_format(path: str) -> str:
    if path.startswith(_OPENAI_PREFIXES):
        return "openai"
    if path.startswith(_ANTHROPIC_PREFIXES):
        return "anthropic"
    return "own"


def error_body(fmt: str, status: int, code: str, message: str, *, details: Any = None,
               request_id: str | None = None, param: str | None = None) -> dict[str, Any]:
    if fmt == "openai":
        return {"error": {"message": message,
                          "type": _OPENAI_TYPES.get(status, "api_error"),
                          "param": param, "code": _OPENAI_CODES.get(code, code.lower())}}
    if fmt == "anthropic":
        return {"type": "error",
                "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(path: str, status: int, code: str, message: str, *, details: Any = None,
                   request_id: str | None = None, headers: Mapping[str, str] | None = None,
                   param: str | None = None) -> Response:
    body = error_body(wire_format(path), status, code, message, details=details,
                      request_id=request_id, param=param)
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def status_for(exc: domain.DomainError) -> int:
    if isinstance(exc, domain.UpstreamError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or None, "message": err["msg"],
         "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _request_id(request: Request) -> str | None:
    request_id: str | None = request.scope.get("state", {}).get("request_id")
    return request_id


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc.status, exc.code, exc.message,
                          details=exc.details, request_id=_request_id(request),
                          headers=exc.headers, param=exc.param)


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, domain.DomainError)
    status = status_for(exc)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return error_response(request.url.path, status, exc.code, exc.message, details=exc.details,
                          request_id=_request_id(request), headers=headers)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    details = validation_details(exc)
    first = details[0] if details else {"field": None, "message": "invalid"}
    message = f"Invalid request body: {first['field']}: {first['message']}"
    return error_response(request.url.path, 422, "VALIDATION_FAILED", message, details=details,
                          request_id=_request_id(request), param=first["field"])


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "RESOURCE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "AUTHENTICATION_REQUIRED"}
    message = {404: "No such route.", 405: "Method not allowed."}.get(exc.status_code,
                                                                    str(exc.detail))
    return error_response(request.url.path, exc.status_code,
                          codes.get(exc.status_code, "HTTP_ERROR"), message,
                          request_id=_request_id(request), headers=exc.headers)


# How long a client should wait when Redis or Postgres cannot be reached: about what a
# restart of either takes, so clients do not hammer the API meanwhile.
UNAVAILABLE_RETRY_AFTER_S = 5
_UNAVAILABLE = (
    redis_errors.ConnectionError, redis_errors.TimeoutError,  # refused, lost, timed out
    sa_errors.TimeoutError,  # no pooled Postgres connection came free in time
)
# Postgres SQLSTATEs of a server that cannot take statements now: connection exceptions
# (class 08), shutting down or starting up (57P01-57P03), out of connections (53300).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# OSErrors that are this process's own mistake rather than a service or the network failing.
_LOCAL_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                    NotADirectoryError)


def dependency_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says Redis or Postgres cannot be reached right now: a state of the
    service (503 with Retry-After), not a bug in it (500).

    asyncpg raises socket errors (ConnectionRefusedError, or a bare OSError listing every
    address it tried) unwrapped when it cannot connect; SQLAlchemy marks a statement that
    failed on a lost connection `connection_invalidated`, and wraps what the server said
    (with its SQLSTATE) when it refused a new connection.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(dependency_unavailable(inner) for inner in exc.exceptions)
    if isinstance(exc, sa_errors.DBAPIError):
        return exc.connection_invalidated or _unavailable_sqlstate(exc.orig)
    if isinstance(exc, _UNAVAILABLE) or _unavailable_sqlstate(exc):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, _LOCAL_OS_ERRORS)


def _unavailable_sqlstate(exc: BaseException | None) -> bool:
    # asyncpg's errors and SQLAlchemy's adaptations of them both carry `sqlstate`.
    return str(getattr(exc, "sqlstate", None) or "").startswith(_UNAVAILABLE_SQLSTATES)


def unexpected_response(scope: Scope, exc: Exception) -> Response:
    """The answer to an exception no handler knows: 503 with Retry-After when Redis or
    Postgres is unavailable, else a logged 500."""
    path: str = scope.get("path", "")
    method = scope.get("method", "WEBSOCKET")
    request_id = scope.get("state", {}).get("request_id")
    if dependency_unavailable(exc):
        log.warning("%s %s: a backing service is unavailable: %r", method, path, exc)
        return error_response(path, 503, "SERVICE_UNAVAILABLE",
                              "A service this request needs is unavailable; retry shortly.",
                              request_id=request_id,
                              headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(path, 500, "INTERNAL_ERROR", "An internal error occurred.",
                          request_id=request_id)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_response(request.scope, exc)


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    domain.DomainError: handle_domain_error,
    ValidationError: handle_validation_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


class ErrorBoundaryMiddleware:
    """Answers every exception that escaped the routes and the middleware inside it, with
    the handler EXCEPTION_HANDLERS gives its class, and returns normally.

    Starlette hands `Exception` to its ServerErrorMiddleware, which answers and then
    re-raises "so servers can log"; uvicorn then closes the connection, so a client's
    next request on it failed with a reset. Errors raised by middleware (auth, rate
    limits: both reach Redis) never pass Starlette's ExceptionMiddleware at all. An
    exception after the answer started cannot be answered, and still propagates.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        answered = False

        async def send_tracked(message: Message) -> None:
            nonlocal answered
            answered = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            # The client hung up while its body was read: nobody is left to answer, and it
            # is not the server's error (it was logged as one for every dropped connection).
            return
        except Exception as exc:
            if answered:
                raise
            if scope["type"] == "http":
                response = await _handler_for(exc)(Request(scope, receive), exc)
            else:
                response = unexpected_response(scope, exc)
                if "websocket.http.response" not in scope.get("extensions", {}):
                    # 1013: try again later; 1011: the server failed.
                    code = 1013 if response.status_code == 503 else 1011
                    await send({"type": "websocket.close", "code": code})
                    return
            await response(scope, receive, send)


def _handler_for(exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]]:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_HANDLERS:
            return EXCEPTION_HANDLERS[cls]
    return handle_unexpected


_JOB_ERROR_STATUS = {
    "UPSTREAM_ERROR": 502,
    "UPSTREAM_UNAVAILABLE": 502,
    "UPSTREAM_TIMEOUT": 504,
    # An agent turn past its time limit.
    "TIMEOUT": 504,
    "RATE_LIMIT_EXCEEDED": 429,
    "MODEL_NOT_FOUND": 404,
    "MODEL_UNAVAILABLE": 503,
    "VALIDATION_FAILED": 422,
    "CANCELLED": 409,
    # The answer outgrew what a job may store or stream: the upstream's answer is refused.
    "RESULT_TOO_LARGE": 502,
    "EVENT_TOO_LARGE": 502,
    "EVENT_STREAM_TOO_LARGE": 502,
}


def job_error_headers(error: Mapping[str, Any]) -> dict[str, str]:
    """Headers a failed job's error calls for: `Retry-After` when the upstream gave one."""
    retry_after = error.get("retry_after_s")
    if isinstance(retry_after, int | float):
        return {"Retry-After": str(max(1, round(retry_after)))}
    if job_error_status(error) == 429:
        return {"Retry-After": "1"}
    return {}


def job_error_status(error: Mapping[str, Any]) -> int:
    """The HTTP status for a failed job's `{code, message, status?}` error."""
    status = error.get("status")
    if isinstance(status, int) and 400 <= status < 600:
        return status
    return _JOB_ERROR_STATUS.get(str(error.get("code")), 500)
