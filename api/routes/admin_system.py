"""Admin: usage per owner, and system status (queue depths, live workers, versions)."""

from __future__ import annotations

import platform
from importlib import metadata

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.admin_state import read_workers
from api.auth import require_read
from api.bodies import json_response as json
from api.context import services
from api.enqueue_amqp import AmqpEnqueuer
from api.openapi import doc
from api.routes.usage import token_usage_report
from pipelines.db import usage as usage_db
from schemas.accounts import (
    QueueStatus,
    SystemStatus,
    UsageReport,
    UsageRow,
)
from schemas.jobs import JOB_ROUTES

# Queues the architecture names, plus any a job kind declares.
_QUEUES = sorted({"chat", "chains", "ingest", "deploy", "default",
                  *(route.queue_name for route in JOB_ROUTES.values())})


@doc("Jobs per owner and kind, and chat tokens and cost", response=UsageReport,
     query={"from": "string", "to": "string", "owner_id": "string", "key_id": "string"},
     tags=["admin"])
async def usage(request: Request) -> Response:
    require_read(request)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(usage_db.jobs_by_owner_and_kind())).all()
    tokens = await token_usage_report(request, owner_id=None, admin=True)
    return json(UsageReport(usage=[
        UsageRow(owner_id=r.owner_id, kind=r.kind, jobs=r.jobs, succeeded=r.succeeded or 0,
                 failed=r.failed or 0) for r in rows], tokens=tokens))


@doc("Queue depths from the broker, live workers, and versions", response=SystemStatus,
     tags=["admin"])
async def system_status(request: Request) -> Response:
    require_read(request)
    svc = services(request)
    keys, redis = svc.keys, svc.redis
    if isinstance(svc.enqueuer, AmqpEnqueuer):  # RabbitMQ counts ready and delayed only
        rabbit = await svc.enqueuer.queue_counts(list(_QUEUES))
        queues = [QueueStatus(name=q, queued=ready, delayed=delayed, messages=ready + delayed)
                  for q, (ready, delayed, _) in zip(_QUEUES, rabbit, strict=True)]
    else:
        pipe = redis.pipeline(transaction=False)
        for queue in _QUEUES:
            pipe.llen(keys.dramatiq_queue(queue))
            pipe.llen(keys.dramatiq_queue(f"{queue}.DQ"))  # Dramatiq's delay queue
            pipe.hlen(keys.dramatiq_messages(queue))
        counts = await pipe.execute()
        queues = [QueueStatus(name=q, queued=counts[3 * i], delayed=counts[3 * i + 1],
                              messages=counts[3 * i + 2]) for i, q in enumerate(_QUEUES)]
    workers = await read_workers(svc)
    async with svc.autocommit.connect() as conn:
        postgres = (await conn.execute(text("SHOW server_version"))).scalar_one()
    redis_info = await redis.info("server")
    versions = {"switchyard": _version(), "python": platform.python_version(),
                "postgres": str(postgres), "redis": str(redis_info.get("redis_version", ""))}
    return json(SystemStatus(queues=queues, workers=workers, versions=versions))


def _version() -> str:
    try:
        return metadata.version("switchyard")
    except metadata.PackageNotFoundError:
        return "unknown"


routes = [
    Route("/v1/admin/usage", usage, methods=["GET"]),
    Route("/v1/system/status", system_status, methods=["GET"]),
]
