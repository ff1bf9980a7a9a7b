"""One deployment state change: the conditional UPDATE, its model's status, its event.

Every change goes through `move`, so the row, the model registry and the event log never
disagree for long: the UPDATE commits first (with the model row's status in the same
transaction), then the event is published. The deployments' events share one log (a
job-shaped Redis Stream under the fixed id `DEPLOYMENTS_LOG`, capped and resumable), so the
API follows it with the same hub and stream reader as a job's; the chat WebSocket turns
each into a model-status frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines.db import deployments as deployments_db
from pipelines.events import AsyncEventLog
from schemas.deployments import MODEL_STATUS, MODEL_STATUS_FRAMES

# Not a job id (those are UUIDs): the one event log of every deployment's changes.
DEPLOYMENTS_LOG = "deployments"
EVENT_TYPE = "deployment.state"


@dataclass(frozen=True, slots=True)
class DeployKeys:
    """The Redis keys of deployments (besides the shared event log)."""

    namespace: str

    def lease(self, deployment_id: str) -> str:
        """Held (SET NX PX, renewed) by the one supervisor that may run the deployment."""
        return f"{self.namespace}:deploy:{deployment_id}:lease"

    def logs(self, deployment_id: str) -> str:
        """A capped stream of the deployment's process output, readable from any host."""
        return f"{self.namespace}:deploy:{deployment_id}:logs"


def change_event(row: Any, previous: str | None) -> dict[str, Any]:
    """What a state change publishes (and the model-status frame is made of)."""
    return {
        "deployment_id": str(row.id), "model": row.model, "name": row.name,
        "state": row.state, "previous_state": previous,
        "model_status": MODEL_STATUS[row.state],
        "frame": MODEL_STATUS_FRAMES.get(row.state),
        "message": row.state_message, "restart_count": row.restart_count,
        "host": row.host, "at": time.time(),
    }


async def publish(events: AsyncEventLog, row: Any, previous: str | None) -> None:
    await events.publish(DEPLOYMENTS_LOG, EVENT_TYPE, change_event(row, previous), force=True)


async def move(engine: AsyncEngine, events: AsyncEventLog, deployment_id: str, to: str,
               from_states: Iterable[str], *, supervisor: str | None = None,
               failure: str | None = None, **values: Any) -> Any | None:
    """Move a deployment to `to` if it is in `from_states` (and still held by `supervisor`);
    None if it was not. `failure` is kept as the first failure if none is yet."""
    from_states = tuple(from_states)
    async with engine.begin() as conn:
        before = (await conn.execute(deployments_db.get(deployment_id))).first()
        if before is None or before.state not in from_states:
            return None
        row = (await conn.execute(deployments_db.transition(
            deployment_id, to, from_states, supervisor=supervisor, **values))).first()
        if row is None:
            return None
        if failure is not None:
            await conn.execute(deployments_db.record_failure(deployment_id, failure))
        await conn.execute(deployments_db.set_model_status(row.model, MODEL_STATUS[to]))
    if before.state != to:
        await publish(events, row, before.state)
    return row
