"""The deployment supervisor of each deploy worker process, as Dramatiq middleware.

The supervision (pipelines/deploy/supervisor.py) runs on the event loop of every worker
process that consumes the `deploy` queue, for as long as the process lives, so a
deployment outlives the job that started it. Apart from workers/deploy.py because the
broker module adds this middleware before any actor may be declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread

from pipelines import outbound
from pipelines.deploy.lifecycle import DeployKeys
from pipelines.deploy.supervisor import Supervisor, SupervisorConfig
from schemas.settings import Settings
from workers.resources import current

log = logging.getLogger("switchyard.deploy")

_supervisor: Supervisor | None = None


def supervisor_config(settings: Settings) -> SupervisorConfig:
    return SupervisorConfig(
        tick_s=settings.deploy_tick_s, lease_ttl_s=settings.deploy_lease_ttl_s,
        health_interval_s=settings.deploy_health_interval_s,
        health_timeout_s=settings.deploy_health_timeout_s,
        health_initial_delay_s=settings.deploy_health_initial_delay_s,
        failure_threshold=settings.deploy_failure_threshold,
        start_timeout_s=settings.deploy_start_timeout_s,
        max_restarts=settings.deploy_max_restarts,
        restart_backoff_s=settings.deploy_restart_backoff_s,
        stop_grace_s=settings.deploy_stop_grace_s, log_lines=settings.deploy_log_lines,
        advertise_host=settings.deploy_advertise_host,
        cost_hour_s=settings.deploy_cost_hour_s,
        policy=outbound.OutboundPolicy.of(settings.outbound_allow_private,
                                          settings.outbound_allowed_hosts))


class DeploymentSupervision(dramatiq.Middleware):
    """Runs a Supervisor on the loop of each worker process that consumes `deploy`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._task: Any = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _supervisor
        queues = worker.consumer_whitelist
        if queues is not None and "deploy" not in queues:
            return
        thread = get_event_loop_thread()
        if thread is None:
            return
        res = current()
        _supervisor = Supervisor(
            res.aengine, res.aredis, res.aevents, DeployKeys(res.keys.namespace),
            res.models.box, supervisor_config(self.settings),
            name=f"{socket.gethostname()}:{os.getpid()}", host=socket.gethostname())
        supervisor = _supervisor

        async def start() -> None:
            self._task = asyncio.get_running_loop().create_task(supervisor.run(),
                                                                name="deploy-supervisor")

        thread.run_coroutine(start())

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        supervisor = _supervisor
        if thread is None or supervisor is None:
            return

        async def stop() -> None:
            await supervisor.shutdown()
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task

        try:
            thread.run_coroutine(stop())
        except Exception:
            log.warning("stopping the deployment supervisor failed", exc_info=True)


def poke() -> None:
    """Have this process's supervisor look at every deployment now."""
    if _supervisor is not None:
        _supervisor.poke()
