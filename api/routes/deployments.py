"""`/v1/deployments`, `/v1/resources`, `/v1/pricing` and `POST /v1/models/{id}/load|unload`.

Deployments are changed by admins only (403 for anyone else, like the other admin routes):
they run commands on worker hosts. Operators and viewers may read their status (not the
logs). Every change is a `deploy` job (202 with the job), which the deploy workers'
supervisors carry out; the changes they make are the events of
`GET /v1/deployments/events` (SSE, resumable with Last-Event-ID).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_read
from api.bodies import parse
from api.context import Services, principal, services
from api.formats.job_events import EventSseWriter
from api.job_control import submit_job
from api.job_replies import StreamResponse
from api.job_stream import JobStream
from api.openapi import doc
from api.routes.jobs import job_summary
from api.sse import _last_event_id
from pipelines import outbound
from pipelines.db import deployments as deployments_db
from pipelines.deploy.lifecycle import DEPLOYMENTS_LOG, DeployKeys
from pipelines.errors import (
    Conflict,
    DeploymentNotFound,
    InvalidInput,
    ModelNotFound,
    PermissionDenied,
)
from pipelines.models import DEV_MODELS
from schemas.deployments import (
    MODEL_STATUS,
    DeploymentCreate,
    DeploymentList,
    DeploymentRead,
    FailureRead,
    HealthRead,
)
from schemas.jobs import Event

_TAGS = ["deployments"]
_MAX_LOG_LINES = 1000


def _admin(request: Request) -> Services:
    if not principal(request).is_admin:
        raise PermissionDenied("Deployments are for administrators.")
    return services(request)


def _reader(request: Request) -> Services:
    """Deployment status (no secret: targets show `has_api_key` only): operators and
    viewers too. Logs and every change stay with administrators."""
    require_read(request)
    return services(request)


def _json(body: Any, status: int = 200) -> Response:
    if hasattr(body, "model_dump_json"):
        return Response(body.model_dump_json(), status_code=status,
                        media_type="application/json")
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _public_target(target: dict[str, Any]) -> dict[str, Any]:
    """The target without its key (write-only), with `has_api_key` instead."""
    shown = {k: v for k, v in target.items() if k != "api_key"}
    if target.get("type") == "endpoint":
        shown["has_api_key"] = bool(target.get("api_key"))
    return shown


def read(row: Any) -> DeploymentRead:
    now = datetime.now(UTC)
    running = row.state in ("running", "unhealthy") and row.started_at is not None
    failure = (FailureRead(reason=row.first_failure_reason, at=row.first_failure_at)
               if row.first_failure_reason and row.first_failure_at else None)
    return DeploymentRead(
        id=str(row.id), name=row.name, model=row.model, upstream_model=row.upstream_model,
        target=_public_target(row.target), state=row.state, desired_state=row.desired,
        state_message=row.state_message, model_status=MODEL_STATUS[row.state],
        restart_count=row.restart_count, first_failure=failure,
        health=HealthRead(last_check_at=row.last_health_at,
                          latency_ms=row.last_health_latency_ms,
                          consecutive_failures=row.consecutive_failures),
        host=row.host, pid=row.pid, port=row.port, base_url=row.base_url,
        uptime_s=(now - row.started_at).total_seconds() if running else None,
        estimated_hourly_cost=float(row.estimated_hourly_cost),
        cost_so_far=float(row.cost_accrued_usd), created_at=row.created_at,
        updated_at=row.updated_at, started_at=row.started_at,
        links={"self": f"/v1/deployments/{row.id}",
               "logs": f"/v1/deployments/{row.id}/logs", "events": "/v1/deployments/events"})


async def _row(svc: Services, deployment_id: str) -> Any:
    try:
        # Canonical: asyncpg refuses other spellings Python accepts ({…}, urn:uuid:…).
        deployment_id = str(uuid.UUID(deployment_id))
    except ValueError:
        raise DeploymentNotFound(f"No deployment with id '{deployment_id}'.") from None
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(deployments_db.get(deployment_id))).first()
    if row is None:
        raise DeploymentNotFound(f"No deployment with id '{deployment_id}'.")
    return row


async def _submit(request: Request, svc: Services, deployment_id: str, action: str) -> Any:
    caller = principal(request)
    job, _ = await submit_job(svc, kind="deploy", owner_id=caller.owner_id,
                              input={"deployment_id": deployment_id, "action": action},
                              key_id=caller.key_id)
    return job


def _accepted(row: Any, job: Any) -> Response:
    body = {"deployment": orjson.loads(read(row).model_dump_json()),
            "job": orjson.loads(job_summary(job).model_dump_json())}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json",
                    headers={"Location": f"/v1/deployments/{row.id}"})


@doc("Deploy a model (an endpoint, or a supervised process)", body=DeploymentCreate,
     status=202, tags=_TAGS)
async def create_deployment(request: Request) -> Response:
    svc = _admin(request)
    body = await parse(request, DeploymentCreate, svc.settings.max_json_body_bytes)
    if body.model in DEV_MODELS:
        raise Conflict(f"'{body.model}' is a built-in development model.")
    target = body.target.model_dump()
    if target["type"] == "endpoint":
        settings = svc.settings
        await outbound.check_async(target["base_url"], outbound.OutboundPolicy.of(
            settings.outbound_allow_private, settings.outbound_allowed_hosts))
        target["base_url"] = target["base_url"].rstrip("/")
        if target.get("api_key"):
            target["api_key"] = svc.models.box.seal(target["api_key"])
    for fallback in body.fallbacks:
        if fallback == body.model:
            raise InvalidInput("A model cannot be its own fallback.")
        try:
            await svc.models.get(fallback)
        except ModelNotFound:
            raise InvalidInput(f"The fallback model '{fallback}' does not exist.") from None
    deployment_id = str(uuid.uuid4())
    state = "pending" if body.start else "stopped"
    async with svc.engine.begin() as conn:
        source = (await conn.execute(deployments_db.model_source(body.model))).scalar()
        if source is not None and source != "deployment":
            raise Conflict(f"The model '{body.model}' is already in the registry; deploy "
                           "under another id.")
        row = (await conn.execute(deployments_db.insert_deployment({
            "id": deployment_id, "owner_id": principal(request).owner_id, "name": body.name,
            "model": body.model, "upstream_model": body.upstream_model or body.model,
            "target_type": target["type"], "target": target,
            "context_window": body.context_window, "description": body.description,
            "estimated_hourly_cost": body.estimated_hourly_cost,
            "desired": "running" if body.start else "stopped", "state": state}))).first()
        if row is None:
            raise Conflict(f"The model '{body.model}' is deployed already.")
        await conn.execute(deployments_db.upsert_model(body.model, {
            "provider": "openai", "upstream_model": row.upstream_model, "base_url": None,
            "api_key": None, "context_window": body.context_window,
            "description": body.description or f"Deployment {body.name}",
            "fallbacks": body.fallbacks, "runtime_status": MODEL_STATUS[state]}))
    svc.models.invalidate()
    if not body.start:
        return _json(read(row), status=201)
    return _accepted(row, await _submit(request, svc, deployment_id, "start"))


@doc("List deployments", response=DeploymentList, tags=_TAGS)
async def list_deployments(request: Request) -> Response:
    svc = _reader(request)
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(deployments_db.all_deployments())).all()
    return _json(DeploymentList(data=[read(row) for row in rows]))


@doc("Read a deployment: state, health, uptime, host, restarts, first failure, cost",
     response=DeploymentRead, tags=_TAGS)
async def get_deployment(request: Request) -> Response:
    svc = _reader(request)
    return _json(read(await _row(svc, request.path_params["deployment_id"])))


def _action(action: str) -> Any:
    async def handler(request: Request) -> Response:
        svc = _admin(request)
        row = await _row(svc, request.path_params["deployment_id"])
        return _accepted(row, await _submit(request, svc, str(row.id), action))

    handler.__name__ = f"{action}_deployment"
    return doc(f"{action.capitalize()} a deployment (a deploy job)", status=202,
               tags=_TAGS)(handler)


@doc("The tail of a process deployment's output", tags=_TAGS)
async def deployment_logs(request: Request) -> Response:
    svc = _admin(request)
    row = await _row(svc, request.path_params["deployment_id"])
    try:
        tail = min(max(int(request.query_params.get("tail", "100")), 1), _MAX_LOG_LINES)
    except ValueError:
        tail = 100
    entries = await svc.redis.xrevrange(DeployKeys(svc.keys.namespace).logs(str(row.id)),
                                        count=tail)
    lines = [{"id": _text(entry_id), "line": _text((fields or {}).get(b"line", b""))}
             for entry_id, fields in reversed(entries or [])]
    return _json({"deployment_id": str(row.id), "data": lines})


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _ChangeSseWriter(EventSseWriter):
    """A change as `id:`, `event: deployment.state` and the change itself as data (the
    log's job-shaped envelope — `job_id`, `seq` — means nothing here)."""

    def event(self, event: Event) -> bytes:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            event.id.encode(), event.type.encode(), orjson.dumps(event.data))

    terminal = event


@doc("Every deployment's state changes (SSE, resumable with Last-Event-ID)", tags=_TAGS)
async def deployment_events(request: Request) -> Response:
    svc = _reader(request)
    last_id = _last_event_id(request)
    stream = await JobStream.resume(svc.hub, svc.events, DEPLOYMENTS_LOG, after=last_id,
                                    keepalive_s=svc.settings.sse_keepalive_s,
                                    lifetime_s=svc.settings.max_sse_lifetime_s)
    return StreamResponse(stream, _ChangeSseWriter(), {})


# STING's load/unload, Staque IO's resources and pricing.

async def _by_model(svc: Services, model_id: str) -> Any:
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(deployments_db.by_model(model_id))).first()
    if row is None:
        await svc.models.get(model_id)  # MODEL_NOT_FOUND for an unknown id
        raise Conflict(f"The model '{model_id}' is not a deployment: it cannot be loaded "
                       "or unloaded.")
    return row


@doc("Load a deployed model (start its deployment); 409 past max_loaded", status=202,
     tags=["models"])
async def load_model(request: Request) -> Response:
    svc = _admin(request)
    row = await _by_model(svc, request.path_params["model_id"])
    async with svc.autocommit.connect() as conn:
        loaded = (await conn.execute(deployments_db.loaded_count(row.model))).scalar_one()
    if loaded >= svc.settings.max_loaded_models:
        raise Conflict(f"{loaded} models are loaded already (max_loaded is "
                       f"{svc.settings.max_loaded_models}); unload one first.")
    return _accepted(row, await _submit(request, svc, str(row.id), "start"))


@doc("Unload a deployed model (stop its deployment)", status=202, tags=["models"])
async def unload_model(request: Request) -> Response:
    svc = _admin(request)
    row = await _by_model(svc, request.path_params["model_id"])
    return _accepted(row, await _submit(request, svc, str(row.id), "stop"))


def _resource(row: Any) -> dict[str, Any]:
    dep = read(row)
    return {"id": dep.id, "resource_name": dep.name, "resource_type": row.target_type,
            "model": dep.model, "status": dep.state, "model_status": dep.model_status,
            "host": dep.host, "uptime_s": dep.uptime_s,
            "estimated_hourly_cost": dep.estimated_hourly_cost,
            "cost_so_far": dep.cost_so_far, "currency": "USD",
            "links": {"start": f"/v1/resources/{dep.id}/start",
                      "stop": f"/v1/resources/{dep.id}/stop", "deployment": dep.links["self"]}}


@doc("Deployed resources with status, host, uptime and cost", tags=["resources"])
async def list_resources(request: Request) -> Response:
    svc = _reader(request)
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(deployments_db.all_deployments())).all()
    resources = [_resource(row) for row in rows]
    return _json({"success": True, "data": resources,
                  "total_hourly_cost": sum(r["estimated_hourly_cost"] for r in resources
                                           if r["status"] in ("running", "unhealthy")),
                  "total_cost_so_far": sum(r["cost_so_far"] for r in resources)})


@doc("Token prices per model and hourly costs per deployment", tags=["resources"])
async def pricing(request: Request) -> Response:
    svc = services(request)
    caller = principal(request)
    models = [m for m in await svc.models.list()
              if caller.is_admin or m.runtime_status in (None, "loaded")]
    body: dict[str, Any] = {"currency": "USD", "models": [
        {"id": m.id, "provider": m.provider, "input_per_mtok": m.input_price_per_mtok,
         "output_per_mtok": m.output_price_per_mtok} for m in models]}
    if caller.is_admin:
        async with svc.autocommit.connect() as conn:
            rows = (await conn.execute(deployments_db.all_deployments())).all()
        body["deployments"] = [
            {"id": str(row.id), "name": row.name, "model": row.model,
             "estimated_hourly_cost": float(row.estimated_hourly_cost), "state": row.state}
            for row in rows]
    return _json(body)


routes = [
    Route("/v1/deployments", create_deployment, methods=["POST"]),
    Route("/v1/deployments", list_deployments, methods=["GET"]),
    Route("/v1/deployments/events", deployment_events, methods=["GET"]),
    Route("/v1/deployments/{deployment_id}", get_deployment, methods=["GET"]),
    Route("/v1/deployments/{deployment_id}", _action("delete"), methods=["DELETE"]),
    *[Route(f"/v1/deployments/{{deployment_id}}/{action}", _action(action), methods=["POST"])
      for action in ("start", "stop", "restart")],
    Route("/v1/deployments/{deployment_id}/logs", deployment_logs, methods=["GET"]),
    Route("/v1/resources", list_resources, methods=["GET"]),
    *[Route(f"/v1/resources/{{deployment_id}}/{action}", _action(action), methods=["POST"])
      for action in ("start", "stop")],
    Route("/v1/pricing", pricing, methods=["GET"]),
    Route("/v1/models/{model_id:path}/load", load_model, methods=["POST"]),
    Route("/v1/models/{model_id:path}/unload", unload_model, methods=["POST"]),
]
