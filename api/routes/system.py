"""Probes and metrics: `/health` (STING's shape), `/ready` (Postgres, Redis, a live worker),
`/metrics` (Prometheus), and `GET /v1/system/metrics` (admin, JSON)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import resource
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

import orjson
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import require_read
from api.bodies import json_response as json
from api.context import Services, services
from api.enqueue_amqp import AmqpEnqueuer
from api.http_metrics import exposition
from api.openapi import doc
from api.request_totals import REQUEST_TOTALS, RequestTotals
from pipelines.db.inference_stats import inferences_today
from schemas.system import (
    Health,
    HealthStatus,
    ModelMetrics,
    PerformanceMetrics,
    RequestMetrics,
    ServiceState,
    SystemMetrics,
)

_PROBE_TIMEOUT_S = 2.0
# This process's start, for `uptime`: process state, like the metrics registry.
_STARTED_S = time.monotonic()


def switchyard_version() -> str:
    try:
        return metadata.version("switchyard")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _probe_all(svc: Services) -> dict[str, bool]:
    async def postgres() -> bool:
        async with svc.autocommit.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def redis() -> bool:
        return bool(await svc.redis.ping())

    async def workers() -> bool:
        cutoff_ms = int((time.time() - svc.settings.worker_presence_ttl_s) * 1000)
        alive = await svc.redis.zcount(svc.keys.workers(), cutoff_ms, "+inf")
        return alive > 0

    probes: dict[str, Callable[[], Awaitable[bool]]] = {
        "postgres": postgres, "redis": redis, "workers": workers}
    if isinstance(svc.enqueuer, AmqpEnqueuer):  # BROKER_URL=amqp://...: RabbitMQ too
        probes["broker"] = svc.enqueuer.ping

    async def run(probe: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return await asyncio.wait_for(probe(), _PROBE_TIMEOUT_S)
        except Exception:
            return False

    results = await asyncio.gather(*(run(probe) for probe in probes.values()))
    return dict(zip(probes, results, strict=True))


@doc("Liveness with the state of each service (STING's shape); 200 while the process "
     "serves, whatever `status` says", response=Health, tags=["system"])
async def health(request: Request) -> Response:
    checks = await _probe_all(services(request))
    state: dict[bool, ServiceState] = {True: "healthy", False: "unhealthy"}
    if not (checks["postgres"] and checks["redis"]):
        status: HealthStatus = "unhealthy"
    else:
        status = "healthy" if checks["workers"] else "degraded"
    body = Health(status=status, timestamp=dt.datetime.now(dt.UTC),
                  services={"database": state[checks["postgres"]],
                            "redis": state[checks["redis"]],
                            "workers": state[checks["workers"]]},
                  version=switchyard_version(),
                  uptime=round(time.monotonic() - _STARTED_S, 3))
    return json(body)


async def ready(request: Request) -> Response:
    checks = await _probe_all(services(request))
    ok = all(checks.values())
    body = {"status": "ready" if ok else "unavailable", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503,
                    media_type="application/json")


async def metrics(request: Request) -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)


@doc("Today's requests (every API process), chat completions and active models, and this "
     "host's load (STING's /system/metrics)", response=SystemMetrics, tags=["admin"])
async def system_metrics(request: Request) -> Response:
    require_read(request)
    svc = services(request)
    # This process's latest requests count too; other processes fold theirs in every
    # QUEUE_METRICS_INTERVAL_S.
    await REQUEST_TOTALS.flush(svc.redis, svc.keys)
    totals = await RequestTotals.today(svc.redis, svc.keys)
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(inferences_today())).one()
    count = int(totals["requests"])
    return json(SystemMetrics(
        performance=_performance(),
        requests=RequestMetrics(
            total_today=count,
            average_response_time=round(totals["duration_s"] / count, 6) if count else 0.0,
            error_rate=round(totals["errors"] / count, 6) if count else 0.0),
        models=ModelMetrics(
            total_inferences=int(row[0]),
            average_inference_time=(round(float(row.avg_ms) / 1000, 6)
                                    if row.avg_ms is not None else None),
            active_models=sorted(m for m in (row.models or []) if m))))


def _performance() -> PerformanceMetrics:
    cores = os.cpu_count() or 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak_mib = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    disk = shutil.disk_usage(os.getcwd())
    return PerformanceMetrics(cpu_usage=round(os.getloadavg()[0] / cores * 100, 1),
                              memory_usage=round(peak_mib, 1),
                              disk_usage=round(disk.used / disk.total * 100, 1))


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/system/metrics", system_metrics, methods=["GET"]),
]
