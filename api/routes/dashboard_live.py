"""The dashboard's live feed (`GET /v1/admin/live`, SSE), its queue history and model traffic.

One feed per API process. The first dashboard that connects starts one background task
(`LiveFeed`); every `LIVE_INTERVAL_S` it reads the queues and the live workers from Redis
(one pipelined round trip, the layout api/queue_gauges.py reads) and the jobs that changed
from Postgres (index-backed: the active jobs through the partial index
`ix_jobs_active_enqueued`, jobs created in the last seconds through `ix_jobs_created`, and
jobs that left the active set by primary key), and fans what changed out to every
connected dashboard's queue. A hundred open dashboards cost the same Redis and Postgres
work as one; the task stops when the last one leaves.

Events (`event:` is the type; `data` is JSON with the same `type`):
- `snapshot` on connect: queues, workers, job stats, models; and again when a dashboard
  fell too far behind (its queue overflowed) instead of the events it missed;
- `queues` when any queue's counts or pause changed; `workers` every beat (heartbeats move);
- `jobs`: jobs whose status, attempts or progress changed (listing fields only, no input
  or result), at most `_MAX_CHANGES` per beat (`truncated` says when more changed);
- `stats` (the shape of GET /v1/admin/jobs/stats) when jobs changed, at most every
  `_STATS_EVERY_S`; `models` when the model traffic changed, at most every `_MODELS_EVERY_S`.
Each frame has an `id:`; a reconnect (EventSource sends `Last-Event-ID`) starts with a fresh
snapshot, which replaces whatever was missed. A comment line keeps the connection alive
after `sse_keepalive_s` of silence; the stream ends after `max_sse_lifetime_s` and
EventSource reconnects.

EventSource cannot send an Authorization header, so the page first asks for a short-lived
ticket (`POST /v1/admin/live/tickets`, with its credential) and opens the feed with
`?ticket=`. The ticket is a signed token (the sessions' secret, its own audience) naming the
caller and its role, valid for `TICKET_TTL_S`: long enough for EventSource's own reconnects;
after it, the reconnect is refused (401) and the page asks for a new ticket, which checks
its credential again. Scripts may call the feed with their usual Bearer header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
from sqlalchemy import func, select, text
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from api import admin_state
from api.auth import require_read
from api.bodies import int_query
from api.bodies import json_response as json
from api.context import Principal, Services, services
from api.errors import ApiError
from api.formats.sse import KEEPALIVE_FRAME, typed_frame
from api.job_replies import SseResponse
from api.openapi import doc
from api.queue_gauges import QUEUES
from pipelines.db import dashboard_stats
from pipelines.db.tables import jobs
from pipelines.errors import PermissionDenied
from schemas.accounts import READ
from schemas.dashboard import (
    LiveTicket,
    ModelTraffic,
    ModelTrafficList,
    QueueHistory,
    QueueHistoryList,
)

log = logging.getLogger("switchyard.live")

LIVE_PATH = "/v1/admin/live"
# The feed checks its own ticket: the auth middleware lets it through without a header.
OPTIONAL_AUTH_PATHS = frozenset({LIVE_PATH})

LIVE_INTERVAL_S = 1.0
TICKET_TTL_S = 120
_TICKET_AUDIENCE = "switchyard-live"
_TICKET_ALGORITHM = "HS256"
_STATS_EVERY_S = 5.0  # while jobs change; unchanged stats are re-read every _STATS_IDLE_S
_STATS_IDLE_S = 60.0
_MODELS_EVERY_S = 15.0
_HISTORY_CACHE_S = 3.0
_MODELS_CACHE_S = 10.0
_MAX_CHANGES = 200  # job changes per beat
_ACTIVE_LIMIT = 1000  # active jobs watched per beat (oldest first)
_RECENT_WINDOW_S = 10.0  # jobs created this recently are re-read every beat
_QUEUE_SIZE = 64  # frames buffered per dashboard before it gets a fresh snapshot instead
_RESNAPSHOT = object()
_STATE_KEYS = frozenset({"queues", "workers", "stats", "models"})
_JOB_FIELDS = ("id", "kind", "owner_id", "status", "attempts", "progress", "error",
               "created_at", "started_at", "finished_at")
_JOB_COLUMNS = [jobs.c[name] for name in _JOB_FIELDS]
# Literally the predicate of the partial index `ix_jobs_active_enqueued` (bound parameters
# would keep a generic plan from proving it implies the index's).
_ACTIVE = text("jobs.status IN ('queued', 'running')")


def _reader(who: Principal) -> Principal:
    """`who`, if their role may read the operators' views (admin, operator, viewer: the
    `read` permission of schemas/accounts.py, as api/auth.py `require_read` checks)."""
    if not who.can(READ):
        raise PermissionDenied("This route is for administrators, operators and viewers.",
                               details={"role": who.role, "required": READ})
    return who


def _plain(value: Any) -> Any:
    """Row values as JSON can carry them (orjson reads datetimes and UUID strings)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


# --- reading the state -------------------------------------------------------------------


async def read_queues(svc: Services) -> list[dict[str, Any]]:
    return [q.model_dump(mode="json") for q in await admin_state.read_queues(svc, QUEUES)]


async def read_workers(svc: Services) -> list[dict[str, Any]]:
    return [w.model_dump(mode="json") for w in await admin_state.read_workers(svc)]


async def read_stats(svc: Services) -> dict[str, Any]:
    return (await admin_state.read_stats(svc)).model_dump(mode="json")


async def read_history(svc: Services, minutes: int) -> QueueHistoryList:
    """Per queue and minute over the last `minutes` (the current minute included)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    starts = [now - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
    index = {start: i for i, start in enumerate(starts)}
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(dashboard_stats.queue_history(starts[0]))).all()
    series: dict[str, dict[str, list[Any]]] = {}
    fields = ("finished", "succeeded", "failed", "cancelled")
    timings = ("run_p50_s", "run_p95_s", "wait_p50_s", "wait_p95_s")
    for name in (*QUEUES, *sorted({row.queue for row in rows} - set(QUEUES))):
        series[name] = {**{f: [0] * minutes for f in fields},
                        **{t: [None] * minutes for t in timings}}
    for row in rows:
        i = index.get(row.minute.astimezone(UTC))
        if i is None:  # finished in a minute after `now` (clock skew): not in the window
            continue
        for f in fields:
            series[row.queue][f][i] = int(getattr(row, f))
        for t in timings:
            value = getattr(row, t)
            series[row.queue][t][i] = None if value is None else round(float(value), 4)
    return QueueHistoryList(minutes=starts, queues=[QueueHistory(name=name, **values)
                                                    for name, values in series.items()])


async def read_model_traffic(svc: Services) -> list[ModelTraffic]:
    """Every registered model (and every model jobs named in the last day): status, the
    deployment serving it, requests and errors in the last hour and day, tokens and cost."""
    now = datetime.now(UTC)
    day, hour = now - timedelta(days=1), now - timedelta(hours=1)
    registered = await svc.models.list()  # the dev models too, when enabled
    async with svc.autocommit.connect() as conn:
        deployed = (await conn.execute(dashboard_stats.deployment_states())).all()
        requests = (await conn.execute(dashboard_stats.model_requests(day, hour))).all()
        usage = (await conn.execute(dashboard_stats.model_usage(day))).all()
    out: dict[str, ModelTraffic] = {}
    for info in registered:
        status = info.runtime_status or ("enabled" if info.enabled else "disabled")
        out[info.id] = ModelTraffic(id=info.id, provider=info.provider, enabled=info.enabled,
                                    source=info.source, status=status)
    for row in requests:
        model = out.setdefault(row.model, ModelTraffic(id=row.model, status="unregistered"))
        model.requests_24h, model.requests_1h = row.requests, row.requests_recent
        model.errors_24h, model.errors_1h = row.errors, row.errors_recent
    for row in usage:
        model = out.setdefault(row.model, ModelTraffic(id=row.model, status="unregistered"))
        model.completions_24h = row.completions
        model.prompt_tokens_24h = int(row.prompt_tokens)
        model.completion_tokens_24h = int(row.completion_tokens)
        model.cost_usd_24h = round(float(row.cost_usd), 6)
        model.avg_ms_24h = None if row.avg_ms is None else round(float(row.avg_ms), 1)
        model.avg_ttft_ms_24h = (None if row.avg_ttft_ms is None
                                 else round(float(row.avg_ttft_ms), 1))
    for row in deployed:
        model = out.setdefault(row.model, ModelTraffic(id=row.model, status="unregistered"))
        model.deployment = {"id": str(row.id), "name": row.name, "state": row.state,
                            "state_message": row.state_message,
                            "estimated_hourly_cost": float(row.estimated_hourly_cost),
                            "cost_accrued_usd": float(row.cost_accrued_usd)}
    # Busiest first, then by name.
    return sorted(out.values(), key=lambda m: (-m.requests_24h, m.id))


class _Memo:
    """One value per key, recomputed at most every `ttl_s` however many callers ask."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = asyncio.Lock()

    async def get(self, key: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        async with self._lock:
            cached = self._values.get(key)
            if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
                return cached[1]
            value = await compute()
            self._values[key] = (time.monotonic(), value)
            return value


# --- the per-process feed -------------------------------------------------------------------


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))


class LiveFeed:
    """Reads once per beat, fans out to every subscriber (see the module docstring)."""

    def __init__(self, svc: Services, models: _Memo) -> None:
        self._svc = svc
        self._models_memo = models
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._boot = int(time.time() * 1000)
        self._seq = 0
        self._state: dict[str, Any] = {}
        self._state_at = 0.0  # time.monotonic() of the last beat that read queues and workers
        self._state_lock = asyncio.Lock()
        self._known: dict[str, tuple[Any, ...]] = {}  # job id -> (status, attempts, progress)
        self._active: set[str] = set()
        self._stats_at = 0.0
        self._models_at = 0.0
        self._jobs_changed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._boot}-{self._seq}"

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[_Subscriber]:
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-live-feed")
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            if not self._subscribers and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def snapshot(self) -> tuple[str, dict[str, Any]]:
        """The current state (read now if no beat has run yet), with the event id it is as of."""
        async with self._state_lock:
            # Read afresh unless a beat is running: after the last dashboard left, what was
            # kept is old.
            if time.monotonic() - self._state_at > 3 * LIVE_INTERVAL_S or not (
                    _STATE_KEYS <= self._state.keys()):
                self._state = {"queues": await read_queues(self._svc),
                               "workers": await read_workers(self._svc),
                               "stats": await read_stats(self._svc),
                               "models": await self._models()}
                self._state_at = self._stats_at = self._models_at = time.monotonic()
            state = dict(self._state)
        return self._next_id(), {**state, "interval_s": LIVE_INTERVAL_S}

    async def _models(self) -> list[dict[str, Any]]:
        traffic = await self._models_memo.get("models", lambda: read_model_traffic(self._svc))
        return [m.model_dump(mode="json") for m in traffic]

    def _publish(self, type_: str, data: dict[str, Any]) -> None:
        frame = typed_frame(self._next_id(), type_, data)
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(frame)
            except asyncio.QueueFull:
                # Too far behind: drop what it has not read, send it a snapshot instead.
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                subscriber.queue.put_nowait(_RESNAPSHOT)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or Postgres down: try again next beat
                log.warning("live feed not refreshed: %r", exc)
            await asyncio.sleep(max(LIVE_INTERVAL_S - (time.monotonic() - started), 0.05))

    async def _beat(self) -> None:
        queues = await read_queues(self._svc)
        workers = await read_workers(self._svc)
        changes, truncated = await self._job_changes()
        now = time.monotonic()
        async with self._state_lock:
            previous = self._state.get("queues")
            self._state["queues"], self._state["workers"] = queues, workers
            self._state_at = now
        if queues != previous:
            self._publish("queues", {"data": queues})
        self._publish("workers", {"data": workers})
        if changes:
            self._jobs_changed = True
            self._publish("jobs", {"data": changes, "truncated": truncated})
        if (self._jobs_changed and now - self._stats_at >= _STATS_EVERY_S) or (
                now - self._stats_at >= _STATS_IDLE_S):
            self._jobs_changed = False
            self._stats_at = now
            stats = await read_stats(self._svc)
            async with self._state_lock:
                previous = self._state.get("stats")
                self._state["stats"] = stats
            if stats != previous:
                self._publish("stats", stats)
        if now - self._models_at >= _MODELS_EVERY_S:
            self._models_at = now
            models = await self._models()
            async with self._state_lock:
                previous = self._state.get("models")
                self._state["models"] = models
            if models != previous:
                self._publish("models", {"data": models})

    async def _job_changes(self) -> tuple[list[dict[str, Any]], bool]:
        """Jobs whose status, attempts or progress moved since the last beat (see module
        docstring for the three index-backed reads)."""
        recent_since = func.now() - timedelta(seconds=_RECENT_WINDOW_S)
        async with self._svc.autocommit.connect() as conn:
            active = (await conn.execute(
                select(*_JOB_COLUMNS).where(_ACTIVE)
                .order_by(jobs.c.enqueued_at).limit(_ACTIVE_LIMIT))).all()
            recent = (await conn.execute(
                select(*_JOB_COLUMNS).where(jobs.c.created_at >= recent_since)
                .order_by(jobs.c.created_at.desc()).limit(_ACTIVE_LIMIT))).all()
            active_ids = {str(row.id) for row in active}
            gone = sorted(self._active - active_ids - {str(row.id) for row in recent})
            left = (await conn.execute(select(*_JOB_COLUMNS).where(jobs.c.id.in_(gone)))).all() \
                if gone else []
        self._active = active_ids
        changes: dict[str, dict[str, Any]] = {}
        for row in (*active, *recent, *left):
            job_id = str(row.id)
            mark = (row.status, row.attempts, row.progress)
            if self._known.get(job_id) != mark:
                self._known[job_id] = mark
                changes[job_id] = {name: _plain(getattr(row, name)) for name in _JOB_FIELDS}
                changes[job_id]["id"] = job_id
        # Forget finished jobs that are no longer read (a retry brings one back as active).
        keep = active_ids | {str(row.id) for row in recent}
        for job_id in [j for j in self._known if j not in keep]:
            del self._known[job_id]
        ordered = list(changes.values())
        return ordered[:_MAX_CHANGES], len(ordered) > _MAX_CHANGES


@dataclass
class _DashboardState:
    feed: LiveFeed
    history: _Memo
    models: _Memo


def _dashboard(conn: HTTPConnection) -> _DashboardState:
    """This process's feed and caches (on the app's state: one per API process)."""
    state: _DashboardState | None = getattr(conn.app.state, "dashboard_live", None)
    if state is None:
        models = _Memo(_MODELS_CACHE_S)
        state = _DashboardState(feed=LiveFeed(services(conn), models),
                                history=_Memo(_HISTORY_CACHE_S), models=models)
        conn.app.state.dashboard_live = state
    return state


# --- tickets ---------------------------------------------------------------------------------


def _secret(conn: HTTPConnection) -> str:
    return services(conn).auth.secret_key


def issue_ticket(conn: HTTPConnection, who: Principal) -> str:
    now = int(time.time())
    claims = {"aud": _TICKET_AUDIENCE, "sub": who.id, "role": who.role, "kid": who.key_id,
              "scopes": list(who.scopes), "tier": who.tier, "iat": now,
              "exp": now + TICKET_TTL_S, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, _secret(conn), algorithm=_TICKET_ALGORITHM)


def _ticket_principal(conn: HTTPConnection, ticket: str) -> Principal:
    try:
        claims = jwt.decode(ticket, _secret(conn), algorithms=[_TICKET_ALGORITHM],
                            audience=_TICKET_AUDIENCE,
                            options={"require": ["sub", "role", "exp", "iat"]})
    except jwt.PyJWTError:
        raise ApiError(401, "INVALID_CREDENTIALS", "The live feed's ticket is invalid or has "
                       "expired; ask for a new one (POST /v1/admin/live/tickets).",
                       headers={"WWW-Authenticate": "Bearer"}) from None
    return Principal(id=str(claims["sub"]), role=str(claims["role"]),
                     key_id=claims.get("kid"), scopes=tuple(claims.get("scopes") or ()),
                     tier=str(claims.get("tier") or "default"))


@doc("A short-lived ticket that opens the live feed from a browser's EventSource",
     response=LiveTicket, status=201, tags=["admin"])
async def create_ticket(request: Request) -> Response:
    who = require_read(request)
    ticket = issue_ticket(request, who)
    return json(LiveTicket(ticket=ticket, expires_in=TICKET_TTL_S,
                           url=f"{LIVE_PATH}?ticket={ticket}"), status=201)


# --- the feed --------------------------------------------------------------------------------


@doc("The dashboard's live feed: a snapshot, then queue, worker, job, stats and model "
     "changes (SSE)", streams=True, query={"ticket": "string"}, tags=["admin"])
async def live(request: Request) -> Response:
    who = request.scope.get("state", {}).get("principal")
    if who is None:
        ticket = request.query_params.get("ticket")
        if not ticket:
            raise ApiError(401, "AUTHENTICATION_REQUIRED",
                           "An API key (Authorization: Bearer) or a ticket from POST "
                           "/v1/admin/live/tickets (?ticket=) is required.",
                           headers={"WWW-Authenticate": "Bearer"})
        who = _ticket_principal(request, ticket)
    who = _reader(who)
    svc = services(request)
    feed = _dashboard(request).feed
    subscription = feed.subscribe()
    subscriber = await subscription.__aenter__()
    try:
        event_id, snapshot = await feed.snapshot()
    except BaseException:
        await subscription.__aexit__(None, None, None)
        raise
    keepalive_s = svc.settings.sse_keepalive_s
    deadline = time.monotonic() + svc.settings.max_sse_lifetime_s

    async def frames() -> AsyncIterator[bytes]:
        # EventSource waits `retry` ms before reconnecting; sent with the first event (a
        # frame of its own would be an empty event to some clients).
        yield b"retry: 2000\n" + typed_frame(event_id, "snapshot",
                                             {**snapshot, "role": who.role})
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                item = await asyncio.wait_for(subscriber.queue.get(),
                                              timeout=min(keepalive_s, left))
            except TimeoutError:
                if time.monotonic() < deadline:
                    yield KEEPALIVE_FRAME
                continue
            if item is _RESNAPSHOT:
                again_id, again = await feed.snapshot()
                yield typed_frame(again_id, "snapshot", {**again, "role": who.role})
            else:
                yield item

    async def leave() -> None:
        await subscription.__aexit__(None, None, None)

    return SseResponse(frames(), leave, {})


# --- history and models ----------------------------------------------------------------------


@doc("Per queue and minute over the last `minutes` (default 60, at most 1440): jobs "
     "finished, p50/p95 run time and queue wait", response=QueueHistoryList,
     query={"minutes": "integer"}, tags=["admin"])
async def queue_history(request: Request) -> Response:
    require_read(request)
    minutes = int_query(request, "minutes", 60, 1, 1440)
    svc = services(request)
    history = await _dashboard(request).history.get(
        minutes, lambda: read_history(svc, minutes))
    return json(history)


@doc("Every model: status, the deployment serving it, requests and errors in the last hour "
     "and day, tokens and cost", response=ModelTrafficList, tags=["admin"])
async def model_traffic(request: Request) -> Response:
    require_read(request)
    svc = services(request)
    traffic = await _dashboard(request).models.get("models", lambda: read_model_traffic(svc))
    return json(ModelTrafficList(data=traffic))


routes = [
    Route(LIVE_PATH, live, methods=["GET"]),
    Route("/v1/admin/live/tickets", create_ticket, methods=["POST"]),
    Route("/v1/admin/queues/history", queue_history, methods=["GET"]),
    Route("/v1/admin/model-traffic", model_traffic, methods=["GET"]),
]
