"""The `deploy` actor: records what an admin asked for (start, stop, restart, delete) and
waits for the supervisors (workers/deploy_supervision.py) to get there."""

from __future__ import annotations

import asyncio
from typing import Any

from pipelines.db import deployments as deployments_db
from pipelines.deploy.lifecycle import DeployKeys, publish
from pipelines.errors import DeploymentFailed, DeploymentNotFound
from schemas.deployments import DeployJob
from workers.actors import job_actor
from workers.deploy_supervision import poke
from workers.jobs import Job
from workers.resources import current

_POLL_S = 0.1


@job_actor("deploy", max_retries=3)
async def run_deploy(job: Job, spec: DeployJob) -> dict[str, Any]:
    """Ask for `spec.action` and wait until the deployment gets there; publishes progress
    events with each state seen. Safe to re-run: each action is idempotent."""
    res = current()
    deployment_id = spec.deployment_id
    desired = "stopped" if spec.action in ("stop", "delete") else "running"
    async with res.aengine.begin() as conn:
        before = (await conn.execute(deployments_db.get(deployment_id))).first()
        if before is None:
            raise DeploymentNotFound(f"No deployment with id '{deployment_id}'.")
        requested = (await conn.execute(deployments_db.request(
            deployment_id, desired, bump=spec.action == "restart" and before.state in (
                "running", "unhealthy", "starting", "provisioning"),
            reset_failure_count=spec.action in ("start", "restart")
            and before.state in ("stopped", "failed")))).one()
    if requested.state != before.state:
        await publish(res.aevents, requested, before.state)
    poke()
    settings = res.settings
    deadline = asyncio.get_running_loop().time() + (
        settings.deploy_start_timeout_s + settings.deploy_stop_grace_s
        + 3 * settings.deploy_lease_ttl_s + 30)
    left_running = spec.action != "restart" or before.state not in ("running", "unhealthy")
    seen = requested.state
    while True:
        async with res.aautocommit.connect() as conn:
            row = (await conn.execute(deployments_db.get(deployment_id))).first()
        if row is None:
            raise DeploymentNotFound(f"The deployment '{deployment_id}' was deleted.")
        if row.state != seen:
            seen = row.state
            await job.emit("progress", {"state": row.state, "message": row.state_message})
        if row.state != "running":
            left_running = True
        if desired == "stopped" and row.state in ("stopped", "failed"):
            break  # a failed deployment runs nothing: stopped as far as a stop goes
        if row.state == "failed":
            raise DeploymentFailed(row.state_message or "The deployment failed.")
        if desired == "running" and row.state == "running" and left_running:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise DeploymentFailed(f"The deployment is still {row.state} after waiting "
                                   f"for it to be {desired}.")
        await asyncio.sleep(_POLL_S)
    if spec.action == "delete":
        async with res.aengine.begin() as conn:
            await conn.execute(deployments_db.delete_deployment(deployment_id))
            await conn.execute(deployments_db.delete_model(row.model))
        await res.aredis.delete(DeployKeys(res.keys.namespace).logs(deployment_id))
        return {"deployment_id": deployment_id, "model": row.model, "deleted": True}
    return {"deployment_id": deployment_id, "model": row.model, "state": row.state,
            "base_url": row.base_url, "restart_count": row.restart_count}
