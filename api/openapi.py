"""`/openapi.json`, generated from the routes and the pydantic models each one declares.

Handlers are annotated with `@doc(...)`; an undocumented route still appears, so the
document always lists every route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

F = TypeVar("F", bound=Callable[..., Any])

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {}, "request_id": {"type": ["string", "null"]},
        "type": {"type": "string"}, "param": {}}}},
}

# The generic Server-Sent Event (the HTML standard's fields); `data` is JSON text here.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {"data": {"type": "string", "contentMediaType": "application/json"},
                   "event": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer", "minimum": 0}},
    "required": ["data"],
}
_ERROR_RESPONSE = {"description": "Error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


def doc(summary: str, *, body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None, status: int = 200,
        streams: bool = False, query: dict[str, str] | None = None,
        tags: Sequence[str] = ()) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn.__openapi__ = {  # type: ignore[attr-defined]
            "summary": summary, "body": body, "response": response, "status": status,
            "streams": streams, "query": query or {}, "tags": list(tags)}
        return fn
    return mark


def build(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for route in routes:
        if isinstance(route, WebSocketRoute):
            # A plain HTTP GET (no Upgrade) finds no route: a 404 error body.
            paths.setdefault(route.path, {})["get"] = {
                "summary": f"WebSocket: {route.name}",
                "parameters": _path_parameters(route.path),
                "responses": {"101": {"description": "Switching protocols"},
                              "4XX": _ERROR_RESPONSE}}
            continue
        if not isinstance(route, Route):
            continue
        meta = getattr(route.endpoint, "__openapi__", {"summary": route.name})
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(_path(route.path), {})[method.lower()] = _operation(
                route.path, meta, components)
    return {"openapi": "3.1.0", "info": {"title": "Switchyard", "version": "0.1.0"},
            "paths": paths, "components": {"schemas": components, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
            "security": [{"bearer": []}, {"apiKey": []}]}


def _path(path: str) -> str:
    return path.replace(":path}", "}")


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(path: str, meta: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": meta.get("summary", ""), "tags": meta.get("tags", [])}
    params = _path_parameters(path)
    params += [{"name": name, "in": "query", "required": False,
                "schema": {"type": kind}} for name, kind in meta.get("query", {}).items()]
    if params:
        op["parameters"] = params
    if meta.get("body") is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(meta["body"], components)}}}
    ok: dict[str, Any] = {"description": "Success"}
    if meta.get("streams"):
        # One event, as OpenAPI 3.1 tools read a text/event-stream schema (3.2's itemSchema).
        ok["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
    if meta.get("response") is not None:
        ok.setdefault("content", {})["application/json"] = {
            "schema": _ref(meta["response"], components)}
    op["responses"] = {str(meta.get("status", 200)): ok, "4XX": _ERROR_RESPONSE,
                       "5XX": _ERROR_RESPONSE}
    return op


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name.split(":")[0], "in": "path", "required": True,
             "schema": {"type": "string"}} for name in _path_params(path)]


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def openapi_route(routes: Sequence[BaseRoute]) -> Route:
    document = orjson.dumps(build(routes))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
