"""Reading request bodies: size limit, content type, JSON, schema — each with its own 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


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
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", f"The request body is not valid JSON: {exc}") from None
    if b"\\u0000" in raw and _has_nul(data):
        # Valid JSON, but Postgres' jsonb and text columns cannot store U+0000.
        raise ApiError(422, "VALIDATION_FAILED",
                       "Strings in the request body must not contain U+0000 (NUL).")
    return data


def _has_nul(value: Any) -> bool:
    # Iterative: orjson accepts nesting deeper than Python's default recursion limit.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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
