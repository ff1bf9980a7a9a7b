"""`/v1/admin/models`: the model registry, editable by admins at run time (operators and
viewers may read it).

The upstream key is write-only: it is sealed on the way in and no response carries it,
only `has_api_key`. Edits reach every process within the registry's cache TTL.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_admin, require_read
from api.bodies import parse
from api.context import Services, services
from api.openapi import doc
from pipelines import outbound
from pipelines.db import models as models_db
from pipelines.errors import Conflict, InvalidInput, ModelNotFound
from pipelines.model_seed import row_values
from pipelines.models import DEV_MODELS
from schemas.models import ModelCreate, ModelList, ModelRead, ModelUpdate

_TAGS = ["admin", "models"]


def _admin(request: Request) -> Services:
    require_admin(request)
    return services(request)


def _reader(request: Request) -> Services:
    """Reading the registry (no secret in it): operators and viewers too."""
    require_read(request)
    return services(request)


def _read(row: Any) -> ModelRead:
    return ModelRead(
        id=row.id, provider=row.provider, upstream_model=row.upstream_model,
        base_url=row.base_url, has_api_key=bool(row.api_key),
        context_window=row.context_window, capabilities=list(row.capabilities or []),
        input_price_per_mtok=float(row.input_price_per_mtok),
        output_price_per_mtok=float(row.output_price_per_mtok),
        fallbacks=list(row.fallbacks or []), timeout_s=row.timeout_s,
        max_output_tokens=row.max_output_tokens, enabled=row.enabled,
        description=row.description, source=row.source, created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


async def _check(svc: Services, model_id: str, provider: str, upstream_model: str,
                 fallbacks: list[str], base_url: str | None) -> None:
    """Reject what the worker could only fail on later, and a base URL reaching a
    link-local or metadata address (always) or a private one (unless the outbound policy
    allows it): admins are trusted, but a stolen admin session should not read the cloud
    metadata service through a model."""
    if base_url is not None:
        settings = svc.settings
        await outbound.check_async(base_url, outbound.OutboundPolicy.of(
            settings.outbound_allow_private, settings.outbound_allowed_hosts))
    if provider == "dev" and upstream_model not in ("echo", "lorem"):
        raise InvalidInput("A dev model's upstream_model is 'echo' or 'lorem'.")
    for fallback in fallbacks:
        if fallback == model_id:
            raise InvalidInput("A model cannot be its own fallback.")
        try:
            await svc.models.get(fallback)
        except ModelNotFound:
            raise InvalidInput(f"The fallback model '{fallback}' does not exist.") from None


@doc("Register a model", body=ModelCreate, response=ModelRead, status=201, tags=_TAGS)
async def create_model(request: Request) -> Response:
    svc = _admin(request)
    body = await parse(request, ModelCreate, svc.settings.max_json_body_bytes)
    if body.id in DEV_MODELS:
        raise Conflict(f"'{body.id}' is a built-in development model.")
    await _check(svc, body.id, body.provider, body.upstream_model, body.fallbacks,
                 body.base_url)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(models_db.insert_model(
            body.id, row_values(body, svc.models.box)))).first()
    if row is None:
        raise Conflict(f"A model with id '{body.id}' already exists.")
    svc.models.invalidate()
    return _json(_read(row), status=201)


@doc("List registry models (with disabled ones)", response=ModelList, tags=_TAGS)
async def list_models(request: Request) -> Response:
    svc = _reader(request)
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(models_db.all_models())).all()
    return _json(ModelList(data=[_read(row) for row in rows]))


async def _row(svc: Services, model_id: str) -> Any:
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(models_db.get_model(model_id))).first()
    if row is None:
        raise ModelNotFound(f"No registry model with id '{model_id}'.")
    return row


def _not_deployed(row: Any) -> None:
    """A deployment's model row is kept by its deployment (base URL, status): edit or
    delete the deployment instead (/v1/deployments)."""
    if row.source == "deployment":
        raise Conflict(f"The model '{row.id}' belongs to a deployment; change or delete "
                       "the deployment instead.")


@doc("Read a registry model", response=ModelRead, tags=_TAGS)
async def get_model(request: Request) -> Response:
    svc = _reader(request)
    return _json(_read(await _row(svc, request.path_params["model_id"])))


@doc("Edit a registry model (fields left out are kept)", body=ModelUpdate, response=ModelRead,
     tags=_TAGS)
async def update_model(request: Request) -> Response:
    svc = _admin(request)
    model_id = request.path_params["model_id"]
    body = await parse(request, ModelUpdate, svc.settings.max_json_body_bytes)
    current = await _row(svc, model_id)
    _not_deployed(current)
    given = body.model_fields_set
    for name in ("provider", "upstream_model", "context_window", "capabilities",
                 "input_price_per_mtok", "output_price_per_mtok", "fallbacks", "enabled",
                 "description"):
        if name in given and getattr(body, name) is None:
            raise InvalidInput(f"'{name}' cannot be null.")
    await _check(svc, model_id, body.provider or current.provider,
                 body.upstream_model or current.upstream_model,
                 body.fallbacks if body.fallbacks is not None else [],
                 body.base_url if "base_url" in given else None)
    values = row_values(body, svc.models.box, fields=set(given))
    async with svc.engine.begin() as conn:
        row = (await conn.execute(models_db.update_model(model_id, values))).first()
    if row is None:
        raise ModelNotFound(f"No registry model with id '{model_id}'.")
    svc.models.invalidate()
    return _json(_read(row))


@doc("Remove a registry model", status=204, tags=_TAGS)
async def delete_model(request: Request) -> Response:
    svc = _admin(request)
    model_id = request.path_params["model_id"]
    _not_deployed(await _row(svc, model_id))
    async with svc.engine.begin() as conn:
        row = (await conn.execute(models_db.delete_model(model_id))).first()
    if row is None:
        raise ModelNotFound(f"No registry model with id '{model_id}'.")
    svc.models.invalidate()
    return Response(status_code=204)


routes = [
    Route("/v1/admin/models", create_model, methods=["POST"]),
    Route("/v1/admin/models", list_models, methods=["GET"]),
    Route("/v1/admin/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/v1/admin/models/{model_id:path}", update_model, methods=["PUT"]),
    Route("/v1/admin/models/{model_id:path}", delete_model, methods=["DELETE"]),
]
