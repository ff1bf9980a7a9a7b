"""Converges deployments on what admins asked for: one supervisor per deploy worker process.

A supervisor runs as one task on its worker process's event loop (not a thread per
deployment). Each pass it renews the Redis leases it holds (SET NX PX, renewed only while
the value is still its own), claims the lease of any deployment that should run and has
none (a new deployment, or one whose supervisor died: *adoption*), and winds down
deployments asked to stop whose supervisor is gone. Each held deployment has a task that
launches or probes it, restarts a crashed process with backoff (giving up after
`max_restarts`: `failed`), stops it gracefully (SIGTERM, then SIGKILL after a grace
period), copies its output to a capped Redis stream and accrues its hourly cost.

Never two servers: only the lease holder launches; a supervisor that fails to renew kills
its child at once; and a child dies with its worker process (PR_SET_PDEATHSIG,
pipelines/deploy/process.py), so a lease can only expire after its server is gone. State
changes are conditional UPDATEs guarded by `supervisor = me`, so a stale holder cannot
write either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines import outbound
from pipelines.db import deployments as deployments_db
from pipelines.deploy.lifecycle import DeployKeys, move
from pipelines.deploy.probe import probe, served_models
from pipelines.deploy.process import ModelProcess, free_port, port_in_use
from pipelines.errors import DomainError
from pipelines.events import AsyncEventLog
from pipelines.secretbox import SecretBox

log = logging.getLogger("switchyard.deploy")

ACTIVE = ("pending", "provisioning", "starting", "running", "unhealthy", "stopping")
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    tick_s: float = 1.0
    lease_ttl_s: float = 10.0
    health_interval_s: float = 5.0
    health_timeout_s: float = 2.0
    health_initial_delay_s: float = 0.0
    failure_threshold: int = 3
    start_timeout_s: float = 60.0
    max_restarts: int = 5
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 30.0
    stop_grace_s: float = 10.0
    log_lines: int = 1000
    advertise_host: str = "127.0.0.1"
    cost_hour_s: float = 3600.0
    policy: outbound.OutboundPolicy = outbound.OutboundPolicy()


class StartFailed(Exception):
    """The server did not come up; the reason is what the deployment shows."""


class Supervisor:
    def __init__(self, engine: AsyncEngine, redis: Redis, events: AsyncEventLog,
                 keys: DeployKeys, box: SecretBox, config: SupervisorConfig, *,
                 name: str, host: str) -> None:
        self.engine = engine
        self.redis = redis
        self.events = events
        self.keys = keys
        self.box = box
        self.config = config
        self.name = name
        self.host = host
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._held: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        self._wake = asyncio.Event()
        self._nudges: dict[str, asyncio.Event] = {}
        self._closing = False
        self._http = httpx.AsyncClient(trust_env=False)

    # The pass over every deployment.

    def poke(self) -> None:
        """Look at every deployment now (an admin just asked for something)."""
        self._wake.set()
        for nudge in self._nudges.values():
            nudge.set()

    async def run(self) -> None:
        while not self._closing:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("deployment supervision pass failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)
            self._wake.clear()

    async def pass_once(self) -> None:
        ttl_ms = int(self.config.lease_ttl_s * 1000)
        for deployment_id, task in list(self._held.items()):
            if task.done():
                self._held.pop(deployment_id, None)
                continue
            if not await self._renew(keys=[self.keys.lease(deployment_id)],
                                     args=[self.name, ttl_ms]):
                log.warning("lost the lease of deployment %s: killing its server",
                            deployment_id)
                self._lost.add(deployment_id)
                task.cancel()
        async with self.engine.connect() as conn:
            wanted = (await conn.execute(deployments_db.wanted_running())).all()
            stops = (await conn.execute(deployments_db.orphaned_stops())).all()
        for row in wanted:
            deployment_id = str(row.id)
            if deployment_id in self._held or self._closing:
                continue
            if await self.redis.set(self.keys.lease(deployment_id), self.name, nx=True,
                                    px=ttl_ms):
                self._held[deployment_id] = asyncio.get_running_loop().create_task(
                    self._hold(deployment_id), name=f"deployment-{deployment_id}")
        for row in stops:
            deployment_id = str(row.id)
            if deployment_id in self._held:
                continue
            if await self.redis.set(self.keys.lease(deployment_id), self.name, nx=True,
                                    px=ttl_ms):
                # Nobody holds it, so nothing of it runs (its server died with its worker).
                try:
                    await self._claim(deployment_id)
                    await move(self.engine, self.events, deployment_id, "stopping", ACTIVE,
                               supervisor=self.name, state_message="stopping")
                    await move(self.engine, self.events, deployment_id, "stopped",
                               ("stopping",), supervisor=self.name, pid=None,
                               started_at=None, state_message="stopped")
                finally:
                    await self._release(keys=[self.keys.lease(deployment_id)],
                                        args=[self.name])

    async def shutdown(self) -> None:
        """The worker is stopping: stop every held server and hand the deployments back."""
        self._closing = True
        self._wake.set()
        tasks = list(self._held.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self._http.aclose()

    # One held deployment.

    async def _claim(self, deployment_id: str) -> Any:
        async with self.engine.begin() as conn:
            return (await conn.execute(deployments_db.claim(deployment_id, self.name,
                                                            self.host))).first()

    async def _row(self, deployment_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(deployments_db.get(deployment_id))).first()

    async def _hold(self, deployment_id: str) -> None:
        nudge = self._nudges.setdefault(deployment_id, asyncio.Event())
        proc: ModelProcess | None = None
        handed_back = False
        try:
            row = await self._claim(deployment_id)
            if row is None:
                return
            adopted = row.state in ("starting", "running", "unhealthy", "stopping")
            generation = row.generation
            message = "starting"
            if adopted:
                message = f"adopted by {self.name}: its supervisor ({row.supervisor}) is gone"
            while True:
                row = await self._row(deployment_id)
                if row is None or row.desired != "running" or row.state == "failed":
                    await self._wind_down(row, proc)
                    proc = None
                    return
                if row.generation != generation:
                    generation = row.generation
                    message = "restarting, as an admin asked"
                    if proc is not None:
                        await self._accrue(row)
                        await proc.stop(self.config.stop_grace_s)
                        await self._copy_logs(deployment_id, proc)
                        proc.discard_log()
                        proc = None
                    row = await move(self.engine, self.events, deployment_id, "provisioning",
                                     ACTIVE, supervisor=self.name, state_message=message)
                    if row is None:
                        continue
                if _needs_start(row, proc):
                    try:
                        proc = await self._start(row, message)
                    except StartFailed as exc:
                        if not await self._after_failure(deployment_id, str(exc),
                                                         ever_ran=row.started_at is not None):
                            return
                        message = f"restarting after: {exc}"
                        continue
                    message = "starting"
                    continue
                reason = await self._check(row, proc)
                if reason is not None and row.target_type == "process":
                    if proc is not None:
                        await proc.stop(self.config.stop_grace_s)
                        await self._copy_logs(deployment_id, proc)
                        proc.discard_log()
                        proc = None
                    if not await self._after_failure(deployment_id, reason, ever_ran=True):
                        return
                    message = f"restarting after: {reason}"
                    continue
                nudge.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(nudge.wait(), self.config.health_interval_s)
        except asyncio.CancelledError:
            if deployment_id in self._lost:
                if proc is not None:
                    proc.kill_now()
            elif proc is not None:
                handed_back = True
                await proc.stop(self.config.stop_grace_s)
            elif self._closing:
                handed_back = True
            if handed_back:
                with contextlib.suppress(Exception):
                    await move(self.engine, self.events, deployment_id, "pending", ACTIVE,
                               supervisor=self.name, pid=None,
                               state_message="its supervisor stopped; waiting for another")
            raise
        except Exception:
            log.exception("supervising deployment %s failed", deployment_id)
            if proc is not None:
                await proc.stop(self.config.stop_grace_s)
        finally:
            if proc is not None:
                with contextlib.suppress(Exception):
                    await self._copy_logs(deployment_id, proc)
                proc.discard_log()
            self._nudges.pop(deployment_id, None)
            self._lost.discard(deployment_id)
            with contextlib.suppress(Exception):
                await self._release(keys=[self.keys.lease(deployment_id)], args=[self.name])

    async def _after_failure(self, deployment_id: str, reason: str, *, ever_ran: bool) -> bool:
        """Record a crash or failed start; True if a restart should follow (after backoff)."""
        row = await self._row(deployment_id)
        if row is None:
            return False
        if not ever_ran or row.restart_count >= self.config.max_restarts:
            final = reason if not ever_ran else (
                f"gave up after {row.restart_count} restarts: {reason}")
            await move(self.engine, self.events, deployment_id, "failed", ACTIVE,
                       supervisor=self.name, failure=reason, state_message=final, pid=None,
                       started_at=None)
            return False
        await move(self.engine, self.events, deployment_id, "unhealthy", ACTIVE,
                   supervisor=self.name, failure=reason, state_message=reason, pid=None)
        backoff = min(self.config.restart_backoff_s * 2 ** row.restart_count,
                      self.config.restart_backoff_max_s)
        await asyncio.sleep(backoff)
        async with self.engine.begin() as conn:
            await conn.execute(deployments_db.transition(
                deployment_id, "unhealthy", ("unhealthy",), supervisor=self.name,
                restart_count=row.restart_count + 1))
        return True

    async def _start(self, row: Any, message: str) -> ModelProcess | None:
        deployment_id = str(row.id)
        row = await move(self.engine, self.events, deployment_id, "provisioning", ACTIVE,
                         supervisor=self.name, state_message=message) or row
        if row.target_type == "endpoint":
            await self._start_endpoint(row)
            return None
        target = row.target
        host = target.get("host") or "127.0.0.1"
        wanted = target.get("port", "auto")
        if wanted == "auto":
            port = free_port(host)
        else:
            port = int(wanted)
            if port_in_use(host, port):
                raise StartFailed(f"port {port} is in use on {self.host}")
        try:
            proc = ModelProcess(target["command"], host=host, port=port,
                                env=target.get("env") or {}, working_dir=target.get("working_dir"))
        except OSError as exc:
            raise StartFailed(f"the command could not start: {exc.strerror or exc}") from None
        base_url = f"http://{self.config.advertise_host}:{port}/v1"
        await move(self.engine, self.events, deployment_id, "starting", ("provisioning",),
                   supervisor=self.name, pid=proc.pid, port=port, base_url=base_url,
                   state_message=f"launched pid {proc.pid} on port {port}",
                   billed_until=datetime.now(UTC))
        health_url = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"
        try:
            body = await self._wait_healthy(row, proc, health_url + target["health_path"])
            self._check_served(row, body)
        except BaseException:
            await proc.stop(self.config.stop_grace_s)
            await self._copy_logs(deployment_id, proc)
            proc.discard_log()
            raise
        await self._register(row, base_url, None)
        await move(self.engine, self.events, deployment_id, "running", ("starting",),
                   supervisor=self.name, state_message="healthy",
                   started_at=datetime.now(UTC), consecutive_failures=0)
        return proc

    async def _wait_healthy(self, row: Any, proc: ModelProcess, url: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        await asyncio.sleep(self.config.health_initial_delay_s)
        while True:
            await self._copy_logs(str(row.id), proc)
            code = proc.exit_code()
            if code is not None:
                tail = await self._log_tail(str(row.id), 3)
                raise StartFailed(f"the process exited with code {code} before it was healthy"
                                  + (f": {tail}" if tail else ""))
            result = await probe(self._http, url, timeout_s=self.config.health_timeout_s)
            if result.ok:
                return result.body
            if loop.time() >= deadline:
                raise StartFailed(f"not healthy within {self.config.start_timeout_s:g}s "
                                  f"({result.reason})")
            await asyncio.sleep(min(0.1, self.config.tick_s))

    def _check_served(self, row: Any, body: Any) -> None:
        served = served_models(body)
        if served is not None and row.upstream_model not in served:
            raise StartFailed(f"the server does not serve the model '{row.upstream_model}' "
                              f"(it serves: {', '.join(served[:20]) or 'nothing'})")

    def _endpoint(self, row: Any) -> tuple[str, dict[str, str]]:
        target = row.target
        key = self.box.open(target["api_key"]) if target.get("api_key") else None
        return (target["base_url"].rstrip("/"),
                {"Authorization": f"Bearer {key}"} if key else {})

    async def _start_endpoint(self, row: Any) -> None:
        deployment_id = str(row.id)
        base_url, headers = self._endpoint(row)
        await move(self.engine, self.events, deployment_id, "starting", ("provisioning",),
                   supervisor=self.name, base_url=base_url, pid=None, port=None,
                   state_message=f"probing {base_url}/models", billed_until=datetime.now(UTC))
        try:
            await outbound.check_async(base_url, self.config.policy)
        except DomainError as exc:
            raise StartFailed(exc.message) from None
        deadline = asyncio.get_running_loop().time() + self.config.start_timeout_s
        while True:
            result = await probe(self._http, f"{base_url}/models",
                                 timeout_s=self.config.health_timeout_s, headers=headers)
            if result.ok:
                break
            if asyncio.get_running_loop().time() >= deadline:
                raise StartFailed(f"not healthy within {self.config.start_timeout_s:g}s "
                                  f"({result.reason})")
            await asyncio.sleep(min(0.5, self.config.health_interval_s))
        self._check_served(row, result.body)
        if row.target.get("keep_alive") is not None:
            warmed = await self._keep_alive(row, row.target["keep_alive"])
            if warmed is not None:
                raise StartFailed(f"the model could not be loaded: {warmed}")
        await self._register(row, base_url, row.target.get("api_key"))
        await move(self.engine, self.events, deployment_id, "running", ("starting",),
                   supervisor=self.name, state_message="healthy",
                   started_at=datetime.now(UTC), consecutive_failures=0)

    async def _keep_alive(self, row: Any, keep_alive: str | int) -> str | None:
        """Ollama's load (`keep_alive` > 0 or -1) or evict (0): a generate request without a
        prompt (its native API, beside the OpenAI one). None on success, else why not."""
        base_url, headers = self._endpoint(row)
        root = base_url.removesuffix("/v1")
        try:
            response = await self._http.post(
                f"{root}/api/generate", headers=headers,
                json={"model": row.upstream_model, "keep_alive": keep_alive},
                timeout=max(self.config.start_timeout_s, self.config.health_timeout_s))
        except httpx.HTTPError as exc:
            return f"{root}/api/generate failed: {type(exc).__name__}"
        if not 200 <= response.status_code < 300:
            return f"{root}/api/generate answered {response.status_code}"
        return None

    async def _register(self, row: Any, base_url: str, sealed_key: str | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(deployments_db.upsert_model(row.model, {
                "provider": "openai", "upstream_model": row.upstream_model,
                "base_url": base_url, "api_key": sealed_key,
                "context_window": row.context_window, "description": row.description,
                "runtime_status": "loading"}))

    async def _check(self, row: Any, proc: ModelProcess | None) -> str | None:
        """One health check of a running or unhealthy deployment; a reason to restart it
        (process targets only), or None."""
        deployment_id = str(row.id)
        await self._accrue(row)
        if proc is not None:
            await self._copy_logs(deployment_id, proc)
            code = proc.exit_code()
            if code is not None:
                return f"the process exited with code {code}"
            url = f"http://127.0.0.1:{proc.port}{row.target['health_path']}"
            headers: dict[str, str] = {}
        else:
            base_url, headers = self._endpoint(row)
            url = f"{base_url}/models"
        result = await probe(self._http, url, timeout_s=self.config.health_timeout_s,
                             headers=headers)
        async with self.engine.begin() as conn:
            failures = (await conn.execute(deployments_db.health(
                deployment_id, ok=result.ok, latency_ms=result.latency_ms))).scalar_one()
        if result.ok:
            if row.state == "unhealthy":
                await move(self.engine, self.events, deployment_id, "running", ("unhealthy",),
                           supervisor=self.name, state_message="healthy again")
            return None
        if failures >= self.config.failure_threshold:
            if row.state == "running":
                await move(self.engine, self.events, deployment_id, "unhealthy", ("running",),
                           supervisor=self.name, failure=result.reason,
                           state_message=result.reason)
            if proc is not None:
                return f"{result.reason} ({failures} checks in a row)"
        return None

    async def _wind_down(self, row: Any, proc: ModelProcess | None) -> None:
        if row is None:
            if proc is not None:
                await proc.stop(self.config.stop_grace_s)
            return
        deployment_id = str(row.id)
        await self._accrue(row)
        await move(self.engine, self.events, deployment_id, "stopping", ACTIVE,
                   supervisor=self.name, state_message="stopping")
        if proc is not None:
            code = await proc.stop(self.config.stop_grace_s)
            await self._copy_logs(deployment_id, proc)
            log.info("deployment %s stopped (exit code %s)", deployment_id, code)
        elif row.target_type == "endpoint" and row.target.get("keep_alive") is not None:
            failed = await self._keep_alive(row, 0)
            if failed is not None:
                log.warning("deployment %s: evicting its model failed: %s", deployment_id,
                            failed)
        await move(self.engine, self.events, deployment_id, "stopped", ("stopping",),
                   supervisor=self.name, pid=None, started_at=None, state_message="stopped")

    # Logs and cost.

    async def _copy_logs(self, deployment_id: str, proc: ModelProcess) -> None:
        lines = proc.new_lines(self.config.log_lines)
        if not lines:
            return
        key = self.keys.logs(deployment_id)
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(key, {"line": line[:4000]}, maxlen=self.config.log_lines,
                      approximate=True)
        await pipe.execute()

    async def _log_tail(self, deployment_id: str, count: int) -> str:
        entries = await self.redis.xrevrange(self.keys.logs(deployment_id), count=count)
        lines = [_text((fields or {}).get(b"line", b""))
                 for _, fields in reversed(entries or [])]
        return " | ".join(line.strip() for line in lines if line.strip())[:500]

    async def _accrue(self, row: Any) -> None:
        hourly = Decimal(str(row.estimated_hourly_cost or 0))
        if hourly <= 0 or row.state not in ("starting", "running", "unhealthy"):
            return
        now = datetime.now(UTC)
        since = row.billed_until or row.started_at or now
        seconds = Decimal(str(max(0.0, (now - since).total_seconds())))
        cost = hourly * seconds / Decimal(str(self.config.cost_hour_s))
        bucket = int(now.timestamp() // self.config.cost_hour_s)
        async with self.engine.begin() as conn:
            await conn.execute(deployments_db.accrue(str(row.id), cost, now))
            if cost > 0:
                await conn.execute(deployments_db.cost_record(
                    str(row.id), row.owner_id, row.model, bucket, cost))


def _needs_start(row: Any, proc: ModelProcess | None) -> bool:
    """A process target runs only while its child does; an endpoint once probed stays
    running or unhealthy (its own health checks move it between the two)."""
    if row.target_type == "process":
        return proc is None or row.state not in ("running", "unhealthy")
    return row.state not in ("running", "unhealthy")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
