"""`GET /v1/models[/{id}]` in OpenAI's list shape, with Switchyard's extra fields.

Each model carries `status` (`loaded | available | loading | unloading | unhealthy |
disabled`); the list adds STING's `default_model`, `loaded_models` and `max_loaded`, and one
model its runtime stats from usage records. Callers other than admins see only the models
they can use now: a deployment's model that is not running is left out for them.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import principal, services
from api.openapi import doc
from pipelines.db import deployments as deployments_db
from pipelines.errors import ModelNotFound
from pipelines.models import ModelInfo


def _visible(model: ModelInfo) -> bool:
    """What a non-admin may see: every model but a deployment's that is not running (a
    disabled one is still listed, as `disabled`)."""
    return model.runtime_status in (None, "loaded")


def _object(model: ModelInfo) -> dict[str, Any]:
    return {**model.as_openai(), "name": model.id}


@doc("List models (registry and development models)", tags=["models"])
async def list_all(request: Request) -> Response:
    svc = services(request)
    models = await svc.models.list()
    if not principal(request).is_admin:
        models = [m for m in models if _visible(m)]
    loaded = [m.id for m in models if m.runtime_status == "loaded"]
    default = svc.settings.default_model
    if default is None and models:
        default = loaded[0] if loaded else models[0].id
    body = {"object": "list", "data": [_object(m) for m in models],
            "default_model": default, "loaded_models": loaded,
            "max_loaded": svc.settings.max_loaded_models}
    return Response(orjson.dumps(body), media_type="application/json")


@doc("Read one model, with its runtime stats", tags=["models"])
async def get_one(request: Request) -> Response:
    svc = services(request)
    model = await svc.models.get(request.path_params["model_id"])
    if not principal(request).is_admin and not _visible(model):
        raise ModelNotFound(f"The model '{model.id}' does not exist.")
    async with svc.autocommit.connect() as conn:
        stats = (await conn.execute(deployments_db.model_stats(model.id))).one()
    seconds = float(stats.duration_ms or 0) / 1000
    # Both at the top (the fields) and under `performance` (STING's shape).
    performance = {
        "avg_response_time": (round(float(stats.avg_duration_ms) / 1000, 4)
                              if stats.avg_duration_ms is not None else None),
        "tokens_per_second": (round(int(stats.completion_tokens or 0) / seconds, 2)
                              if seconds > 0 else None),
    }
    body = {
        **_object(model),
        "inference_count": int(stats.inference_count),
        "last_used": stats.last_used.isoformat() if stats.last_used else None,
        **performance,
        "performance": performance,
    }
    return Response(orjson.dumps(body), media_type="application/json")


routes = [
    Route("/v1/models", list_all, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_one, methods=["GET"]),
]
