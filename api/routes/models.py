"""`GET /v1/models[/{id}]` in OpenAI's list shape, with Switchyard's extra fields."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import services
from api.openapi import doc


@doc("List models (registry and development models)", tags=["models"])
async def list_all(request: Request) -> Response:
    models = await services(request).models.list()
    body = {"object": "list", "data": [m.as_openai() for m in models]}
    return Response(orjson.dumps(body), media_type="application/json")


@doc("Read one model", tags=["models"])
async def get_one(request: Request) -> Response:
    model = await services(request).models.get(request.path_params["model_id"])
    return Response(orjson.dumps(model.as_openai()), media_type="application/json")


routes = [
    Route("/v1/models", list_all, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_one, methods=["GET"]),
]
