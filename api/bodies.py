"""Reading request input: body size, content type, JSON, schema, and query and path
parameters — each refusal its own 4xx, before anything is written.

JSON is bounded as well as parsed (`loads_bounded`), because orjson accepts documents
that the service cannot store and send back. Nesting: orjson parses 1,024 levels but
serialises only 254 (and pydantic fewer), so a stored 300-deep value made every listing
that includes it a 500. Numbers: orjson turns integers beyond 64 bits into floats, which
Postgres' jsonb stores as exact numerics and hands back as integers that orjson then
refuses to serialise ("Integer exceeds 64-bit range"). NUL: Postgres' text and jsonb
cannot store U+0000.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from api.errors import ApiError
from pipelines.errors import NotFound
from schemas.fields import as_utc, canonical_uuid

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 64
# orjson serialises integers in [-2**63, 2**64 - 1]; the stored numbers must stay inside.
MIN_JSON_NUMBER = -(2**63)
MAX_JSON_NUMBER = 2**64 - 1


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The raw body, refusing early on Content-Length and while streaming past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise _too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit_bytes: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE",
                    f"The request body is larger than the limit of {limit_bytes} bytes.")


async def read_json(request: Request, limit_bytes: int, *, allow_empty: bool = False) -> Any:
    content_type = request.headers.get("content-type", "")
    raw = await read_body(request, limit_bytes)
    if not raw and allow_empty:
        return {}
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "The request body must be JSON (Content-Type: application/json).")
    return parse_json(raw, "The request body")


class JsonOutOfBounds(orjson.JSONDecodeError):
    """Valid JSON that the service cannot store or serialise back.

    A JSONDecodeError, so code that refuses orjson's errors (WebSocket frames) refuses
    this too; `message` says what is wrong without the line/column suffix.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.message = message


def loads_bounded(raw: bytes | str) -> Any:
    """orjson.loads, refusing (JsonOutOfBounds) nesting deeper than MAX_JSON_DEPTH, numbers
    outside [MIN_JSON_NUMBER, MAX_JSON_NUMBER] and U+0000 in any string or key."""
    value = orjson.loads(raw)
    # In valid JSON a NUL can only be written as the escape \u0000.
    nul_possible = "\\u0000" in raw if isinstance(raw, str) else b"\\u0000" in raw
    problem = _out_of_bounds(value, nul_possible=nul_possible)
    if problem is not None:
        raise JsonOutOfBounds(problem)
    return value


def parse_json(raw: bytes | str, what: str, *, param: str | None = None) -> Any:
    """`loads_bounded`, with malformed JSON a 400 and out-of-bounds JSON a 422 naming `what`."""
    try:
        return loads_bounded(raw)
    except JsonOutOfBounds as exc:
        raise ApiError(422, "VALIDATION_FAILED", f"{what}: {exc.message}", param=param) from None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", f"{what} is not valid JSON: {exc}",
                       param=param) from None


def _out_of_bounds(value: Any, *, nul_possible: bool) -> str | None:
    # Iterative: orjson parses nesting deeper than Python's recursion limit. Only
    # containers go on the stack; scalars are checked where they are found, by exact type
    # (this runs over every value of a body of up to 10 MB). orjson reads integers only
    # within the bounds (larger ones become floats), so only floats need comparing.
    if type(value) is not dict and type(value) is not list:
        return _bad_scalar(value)
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if type(container) is dict:
            if nul_possible and any("\x00" in key for key in container):
                return _NUL_MESSAGE
            children: Any = container.values()
        else:
            children = container
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth == MAX_JSON_DEPTH:
                    return f"JSON must not be nested more than {MAX_JSON_DEPTH} levels deep."
                if child:
                    stack.append((child, depth + 1))
            elif kind is str:
                if nul_possible and "\x00" in child:
                    return _NUL_MESSAGE
            elif kind is float and not MIN_JSON_NUMBER <= child <= MAX_JSON_NUMBER:
                return _NUMBER_MESSAGE
    return None


_NUL_MESSAGE = "strings must not contain U+0000 (NUL)."
_NUMBER_MESSAGE = (f"numbers must lie within the 64-bit integer range "
                   f"[{MIN_JSON_NUMBER}, {MAX_JSON_NUMBER}].")


def _bad_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return _NUL_MESSAGE if "\x00" in value else None
    if isinstance(value, int | float) and not MIN_JSON_NUMBER <= value <= MAX_JSON_NUMBER:
        return _NUMBER_MESSAGE
    return None


async def parse(request: Request, model: type[M], limit_bytes: int, *,
                allow_empty: bool = False) -> M:
    """Read and validate a JSON body; a schema violation raises pydantic's ValidationError (422)."""
    data = await read_json(request, limit_bytes, allow_empty=allow_empty)
    if not isinstance(data, dict):
        raise ApiError(422, "VALIDATION_FAILED", "The request body must be a JSON object.")
    return model.model_validate(data)


def json_response(model: BaseModel, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """A pydantic model as a JSON response."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json",
                    headers=headers)


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 422 naming it."""
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise ApiError(422, "VALIDATION_FAILED", f"{name} must be an integer.",
                       param=name) from None
    if not low <= value <= high:
        raise ApiError(422, "VALIDATION_FAILED", f"{name} must be between {low} and {high}.",
                       param=name)
    return value


def path_id(conn: HTTPConnection, name: str, not_found: type[NotFound], what: str) -> str:
    """The path's `name` parameter as a canonical UUID (any spelling Python's `uuid` reads:
    `{…}`, `urn:uuid:…`, upper case); anything else names nothing, so `not_found` (404)."""
    raw: str = conn.path_params[name]
    canonical = canonical_uuid(raw)
    if canonical is None:
        raise not_found(f"No {what} with id '{raw}'.")
    return canonical


def datetime_query(request: Request, name: str, *, whole_day: bool = False) -> datetime | None:
    """An ISO 8601 date or datetime query parameter as an aware UTC datetime (naive ones
    are UTC); a bare date is its midnight, or with `whole_day` the next midnight (so that
    an upper bound includes the day). A value whose instant falls outside years 1 to 9999
    in UTC is a 422 like any other unreadable one."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if whole_day else moment
        moment = datetime.fromisoformat(raw)
        return as_utc(moment) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ApiError(422, "VALIDATION_FAILED",
                       f"{name} must be an ISO 8601 date or datetime between the years 1 "
                       f"and 9999 (UTC).", param=name) from None
