"""Admin: queues — their depths, and pause, resume and purging dead letters.

A pause is a member of one Redis set (`Keys.paused_queues`); worker consumers look at it
before they fetch (workers/consumer.py), so jobs stay queued, in order, until a resume.
Messages a worker had already prefetched still run. The dashboard acts through these
routes, and scripts can call them too.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.admin_state import read_queues
from api.auth import require_act_jobs, require_read
from api.bodies import json_response as json
from api.context import services
from api.openapi import doc
from api.queue_gauges import QUEUES
from api.routes.admin_audit import record_action
from pipelines.errors import NotFound
from schemas.admin_queues import PurgeResult, QueueList, QueueRead
from schemas.jobs import QUEUE_PAUSE_CHECK_S


async def _read(request: Request, names: tuple[str, ...]) -> list[QueueRead]:
    return await read_queues(services(request), names)


def _queue(request: Request) -> str:
    name: str = request.path_params["name"]
    if name not in QUEUES:
        raise NotFound(f"No queue named '{name}'.")
    return name


@doc("Every queue: queued, delayed, in flight, dead letters, paused", response=QueueList,
     tags=["admin"])
async def list_queues(request: Request) -> Response:
    require_read(request)
    return json(QueueList(data=await _read(request, QUEUES)))


@doc("Pause a queue: workers take none of its messages; its jobs stay queued",
     response=QueueRead, tags=["admin"])
async def pause(request: Request) -> Response:
    require_act_jobs(request)
    name = _queue(request)
    svc = services(request)
    await svc.redis.sadd(svc.keys.paused_queues(), name)
    await record_action(request, "queue.pause", name)
    # Workers re-read the pause at most this often: once it has passed, none takes another
    # of the queue's messages, which is what the answer promises.
    await asyncio.sleep(QUEUE_PAUSE_CHECK_S)
    return json((await _read(request, (name,)))[0])


@doc("Resume a paused queue", response=QueueRead, tags=["admin"])
async def resume(request: Request) -> Response:
    require_act_jobs(request)
    name = _queue(request)
    svc = services(request)
    pipe = svc.redis.pipeline(transaction=False)
    pipe.srem(svc.keys.paused_queues(), name)
    pipe.lpush(svc.keys.wake(name), b"1")  # idle consumers look again at once
    await pipe.execute()
    await record_action(request, "queue.resume", name)
    return json((await _read(request, (name,)))[0])


@doc("Remove a queue's dead letters", response=PurgeResult, tags=["admin"])
async def purge_dead_letters(request: Request) -> Response:
    require_act_jobs(request)
    name = _queue(request)
    svc = services(request)
    dead = svc.keys.dramatiq_queue(f"{name}.XQ")
    pipe = svc.redis.pipeline(transaction=True)
    pipe.zcard(dead)
    pipe.delete(dead, f"{dead}.msgs")
    count, _ = await pipe.execute()
    await record_action(request, "queue.purge_dead_letters", name, {"purged": int(count)})
    return json(PurgeResult(queue=name, purged=int(count)))


routes = [
    Route("/v1/admin/queues", list_queues, methods=["GET"]),
    Route("/v1/admin/queues/{name}/pause", pause, methods=["POST"]),
    Route("/v1/admin/queues/{name}/resume", resume, methods=["POST"]),
    Route("/v1/admin/queues/{name}/dead-letters/purge", purge_dead_letters, methods=["POST"]),
]
