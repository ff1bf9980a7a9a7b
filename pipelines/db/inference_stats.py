"""The SQL behind `GET /v1/system/metrics`: today's chat completions."""

from __future__ import annotations

from sqlalchemy import Select, func, select, text

from pipelines.db.tables import usage_records

# Midnight UTC of the database's today, whatever the session's time zone.
_TODAY = text("(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')")


def inferences_today() -> Select:
    """One row: completions recorded today, their mean duration (ms) and the models."""
    return (
        select(func.count().label("count"),
               func.avg(usage_records.c.duration_ms).label("avg_ms"),
               func.array_agg(func.distinct(usage_records.c.model)).label("models"))
        .where(usage_records.c.created_at >= _TODAY)
    )
