"""Probes and metrics: `/health` (alive), `/ready` (Postgres, Redis, a live worker), `/metrics`."""

from __future__ import annotations

import asyncio
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import services

_PROBE_TIMEOUT_S = 2.0


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def ready(request: Request) -> Response:
    svc = services(request)

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

    checks = {}
    for name, probe in (("postgres", postgres), ("redis", redis), ("workers", workers)):
        try:
            checks[name] = await asyncio.wait_for(probe(), _PROBE_TIMEOUT_S)
        except Exception:
            checks[name] = False
    ok = all(checks.values())
    body = {"status": "ready" if ok else "unavailable", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503,
                    media_type="application/json")


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
