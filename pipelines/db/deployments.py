"""Every SQL statement about deployments, their models' rows and their cost records.

A state change is a conditional UPDATE (`WHERE state IN (...)`, and for a supervisor
`WHERE supervisor = me`), so two supervisors, or a supervisor and an admin's stop, can never
both move one deployment: the loser's UPDATE returns no row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Delete, Insert, Select, Update, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import deployments, models, usage_records

d = deployments.c
_COST_NAMESPACE = uuid.UUID("6d1c1c53-4bde-4c55-9a35-0c5c8a6fb0d7")


def insert_deployment(values: dict[str, Any]) -> Insert:
    """A new deployment; a model id already deployed inserts nothing and returns no row."""
    return (insert(deployments).values(**values)
            .on_conflict_do_nothing(index_elements=["model"]).returning(*deployments.c))


def get(deployment_id: str) -> Select:
    return select(deployments).where(d.id == deployment_id)


def by_model(model_id: str) -> Select:
    return select(deployments).where(d.model == model_id)


def all_deployments() -> Select:
    return select(deployments).order_by(d.created_at, d.id)


def wanted_running() -> Select:
    """Deployments a supervisor should hold: asked to run and not given up on."""
    return select(deployments).where(d.desired == "running", d.state != "failed")


def orphaned_stops() -> Select:
    """Deployments asked to stop while not yet stopped (their supervisor may be gone)."""
    return select(deployments).where(d.desired == "stopped",
                                     d.state.notin_(("stopped", "failed")))


def request(deployment_id: str, desired: str, *, bump: bool = False,
            reset_failure_count: bool = False) -> Update:
    """An admin's wish: `desired` (running/stopped); `bump` asks the holder to restart.

    Starting a stopped or failed deployment puts it back to `pending` with a fresh restart
    budget; the first failure's reason and time are kept.
    """
    values: dict[str, Any] = {"desired": desired, "updated_at": func.now()}
    if bump:
        values["generation"] = d.generation + 1
    if desired == "running":
        values["state"] = case((d.state.in_(("stopped", "failed")), "pending"), else_=d.state)
    if reset_failure_count:
        values["restart_count"] = 0
    return update(deployments).where(d.id == deployment_id).values(**values).returning(
        *deployments.c)


def transition(deployment_id: str, to: str, from_states: Iterable[str], *,
               supervisor: str | None = None, **values: Any) -> Update:
    """Move to `to` if the state is one of `from_states` (and, given `supervisor`, if that
    supervisor still holds it); returns the row as it was before, with the new row's id."""
    stmt = update(deployments).where(d.id == deployment_id, d.state.in_(tuple(from_states)))
    if supervisor is not None:
        stmt = stmt.where(d.supervisor == supervisor)
    return stmt.values(state=to, updated_at=func.now(), **values).returning(*deployments.c)


def claim(deployment_id: str, supervisor: str, host: str) -> Update:
    """Record who supervises it now (the Redis lease decides who may; this says who does)."""
    return (update(deployments).where(d.id == deployment_id)
            .values(supervisor=supervisor, host=host, updated_at=func.now())
            .returning(*deployments.c))


def record_failure(deployment_id: str, reason: str) -> Update:
    """Keep the first failure's reason and time; later ones only update state_message."""
    return (update(deployments).where(d.id == deployment_id)
            .values(first_failure_reason=func.coalesce(d.first_failure_reason, reason),
                    first_failure_at=func.coalesce(d.first_failure_at, func.now())))


def health(deployment_id: str, *, ok: bool, latency_ms: float | None) -> Update:
    failures = 0 if ok else d.consecutive_failures + 1
    return (update(deployments).where(d.id == deployment_id)
            .values(last_health_at=func.now(), last_health_latency_ms=latency_ms,
                    consecutive_failures=failures)
            .returning(d.consecutive_failures))


def accrue(deployment_id: str, cost: Decimal, until: datetime) -> Update:
    return (update(deployments).where(d.id == deployment_id)
            .values(cost_accrued_usd=d.cost_accrued_usd + cost, billed_until=until))


def cost_record(deployment_id: str, owner_id: str, model_id: str, bucket: int,
                cost: Decimal) -> Insert:
    """Add `cost` to the deployment's usage record of hour `bucket` (one row per hour, so
    `/v1/admin/usage` shows it by model, owner and day like any usage)."""
    job_id = str(uuid.uuid5(_COST_NAMESPACE, f"{deployment_id}:{bucket}"))
    stmt = insert(usage_records).values(job_id=job_id, owner_id=owner_id, model=model_id,
                                        provider="deployment", prompt_tokens=0,
                                        completion_tokens=0, cost_usd=cost)
    return stmt.on_conflict_do_update(
        index_elements=["job_id"],
        set_={"cost_usd": usage_records.c.cost_usd + stmt.excluded.cost_usd})


def delete_deployment(deployment_id: str) -> ReturningDelete[Any]:
    return delete(deployments).where(d.id == deployment_id).returning(d.id, d.model)


# The model row a deployment registers.

def upsert_model(model_id: str, values: dict[str, Any]) -> Insert:
    """Register or refresh a deployment's model; never takes over a model of another source."""
    stmt = insert(models).values(id=model_id, source="deployment", **values)
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={**{name: stmt.excluded[name] for name in values}, "updated_at": func.now()},
        where=models.c.source == "deployment")


def set_model_status(model_id: str, status: str) -> Update:
    return (update(models).where(models.c.id == model_id, models.c.source == "deployment")
            .values(runtime_status=status))


def delete_model(model_id: str) -> Delete:
    return delete(models).where(models.c.id == model_id, models.c.source == "deployment")


def model_source(model_id: str) -> Select:
    return select(models.c.source).where(models.c.id == model_id)


def loaded_count(except_model: str) -> Select:
    """Deployment models loaded or on their way, other than `except_model`."""
    return select(func.count()).select_from(deployments).where(
        d.desired == "running", d.state.notin_(("stopped", "failed")),
        d.model != except_model)


def model_stats(model_id: str) -> Select:
    """STING's runtime stats of a model, from its usage records."""
    u = usage_records.c
    return select(
        func.count().label("inference_count"),
        func.avg(u.duration_ms).label("avg_duration_ms"),
        func.sum(u.completion_tokens).label("completion_tokens"),
        func.sum(u.duration_ms).label("duration_ms"),
        func.max(u.created_at).label("last_used"),
    ).where(u.model == model_id, u.provider != "deployment")
