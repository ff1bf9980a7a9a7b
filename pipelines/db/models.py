"""Every SQL statement about the model registry and usage records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Date, Insert, Select, Update, cast, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import models, usage_records

# Columns an admin or a seed may set; `id`, `source` and timestamps are managed here.
MODEL_FIELDS = (
    "provider", "upstream_model", "base_url", "api_key", "context_window", "capabilities",
    "input_price_per_mtok", "output_price_per_mtok", "fallbacks", "timeout_s", "enabled",
    "description", "max_output_tokens",
)


def all_models() -> Select:
    return select(models).order_by(models.c.id)


def get_model(model_id: str) -> Select:
    return select(models).where(models.c.id == model_id)


def insert_model(model_id: str, values: dict[str, Any]) -> Insert:
    """An admin's new model; an existing id inserts nothing and returns no row."""
    return (
        insert(models)
        .values(id=model_id, source="admin", **values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(*models.c)
    )


def update_model(model_id: str, values: dict[str, Any]) -> Update:
    """An admin's edit: from now on re-seeding leaves the row alone."""
    return (
        update(models)
        .where(models.c.id == model_id)
        .values(source="admin", updated_at=func.now(), **values)
        .returning(*models.c)
    )


def delete_model(model_id: str) -> ReturningDelete[Any]:
    return delete(models).where(models.c.id == model_id).returning(models.c.id)


def seed_model(model_id: str, values: dict[str, Any]) -> Insert:
    """Insert a seeded model, or refresh it if it is still as seeded (never an admin's edit)."""
    stmt = insert(models).values(id=model_id, source="seed", **values)
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={**{name: stmt.excluded[name] for name in values}, "updated_at": func.now()},
        where=models.c.source == "seed",
    )


def _usage_filter(stmt: Select, owner_id: str | None, key_id: str | None,
                  since: datetime | None, until: datetime | None) -> Select:
    if owner_id is not None:
        stmt = stmt.where(usage_records.c.owner_id == owner_id)
    if key_id is not None:
        stmt = stmt.where(usage_records.c.key_id == key_id)
    if since is not None:
        stmt = stmt.where(usage_records.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(usage_records.c.created_at < until)
    return stmt


def _totals() -> list[Any]:
    u = usage_records.c
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(u.cost_usd), 0).label("cost_usd"),
    ]


def usage_totals(group: str | None, *, owner_id: str | None = None, key_id: str | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> Select:
    """Usage summed over all rows, or per `group`: "model", "day" (UTC), "owner" or "key"."""
    u = usage_records.c
    keys = {
        None: None,
        "model": u.model,
        "day": cast(func.timezone("UTC", u.created_at), Date),
        "owner": u.owner_id,
        "key": u.key_id,
    }
    column = keys[group]
    if column is None:
        return _usage_filter(select(*_totals()), owner_id, key_id, since, until)
    stmt = select(column.label("group"), *_totals()).group_by(column).order_by(column)
    return _usage_filter(stmt, owner_id, key_id, since, until)
