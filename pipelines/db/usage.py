"""Every SQL statement behind the admin usage report."""

from __future__ import annotations

from sqlalchemy import Integer, Select, func, select

from pipelines.db.tables import jobs


def jobs_by_owner_and_kind() -> Select:
    """Jobs per owner per kind, with how many succeeded and failed."""
    return (
        select(jobs.c.owner_id, jobs.c.kind, func.count().label("jobs"),
               func.sum((jobs.c.status == "succeeded").cast(Integer)).label("succeeded"),
               func.sum((jobs.c.status == "failed").cast(Integer)).label("failed"))
        .group_by(jobs.c.owner_id, jobs.c.kind)
        .order_by(jobs.c.owner_id, jobs.c.kind)
    )
