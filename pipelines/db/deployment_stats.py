"""The SQL behind the deployment gauges: deployments per state, and the hourly cost of the
ones running."""

from __future__ import annotations

from sqlalchemy import Select, func, select

from pipelines.db.tables import deployments


def by_state() -> Select:
    """One row per state in use: its deployments and their summed estimated hourly cost."""
    return (select(deployments.c.state, func.count().label("deployments"),
                   func.coalesce(func.sum(deployments.c.estimated_hourly_cost), 0)
                   .label("hourly_cost"))
            .group_by(deployments.c.state))
