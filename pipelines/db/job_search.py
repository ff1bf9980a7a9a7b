"""Every SQL statement behind the operators' job search, failure groups and bulk actions.

Filters compose into one WHERE clause (`JobFilter.conditions`), so the listing, the
failure groups and a bulk action's selection always agree on which jobs a filter means.
A failure's signature is its message with the variable parts (UUIDs, numbers) folded to
`#`, so "timeout after 30 s on job 1b2c…" and "timeout after 31 s on job 9f8e…" group
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, literal_column, or_, select

from pipelines.db.jobs import LISTING_COLUMNS
from pipelines.db.tables import jobs

_HEX = "[0-9a-fA-F]"
_VARIABLE_PARTS = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|[0-9]+"
ERROR_CODE = jobs.c.error["code"].astext
ERROR_MESSAGE = jobs.c.error["message"].astext
SIGNATURE = func.regexp_replace(func.coalesce(ERROR_MESSAGE, ""), _VARIABLE_PARTS, "#", "g")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an operator means; every field is optional and they all must hold."""

    statuses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    owner_id: str | None = None
    model: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    error_text: str | None = None
    error_code: str | None = None
    signature: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.statuses:
            where.append(jobs.c.status.in_(self.statuses))
        if self.kinds:
            where.append(jobs.c.kind.in_(self.kinds))
        if self.owner_id:
            where.append(jobs.c.owner_id == self.owner_id)
        if self.model:
            where.append(jobs.c.input["model"].astext == self.model)
        if self.created_from:
            where.append(jobs.c.created_at >= self.created_from)
        if self.created_to:
            where.append(jobs.c.created_at < self.created_to)
        if self.error_text:
            pattern = "%" + _escape_like(self.error_text) + "%"
            where.append(or_(ERROR_MESSAGE.ilike(pattern, escape="\\"),
                             ERROR_CODE.ilike(pattern, escape="\\")))
        if self.error_code:
            where.append(ERROR_CODE == self.error_code)
        if self.signature is not None:
            where.append(and_(jobs.c.error.is_not(None), SIGNATURE == self.signature))
        return where


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(where: JobFilter, *, limit: int,
           cursor: tuple[datetime, str] | None = None) -> Select[Any]:
    """Matching jobs newest first, keyset-paged on (created_at, id) like every listing."""
    stmt = select(*LISTING_COLUMNS).where(*where.conditions())
    if cursor:
        created_at, job_id = cursor
        stmt = stmt.where(or_(jobs.c.created_at < created_at,
                              and_(jobs.c.created_at == created_at, jobs.c.id < job_id)))
    return stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)


def failure_groups(where: JobFilter, *, limit: int) -> Select[Any]:
    """Failed jobs grouped by error code and message signature, the largest group first."""
    failed = JobFilter(**{**_fields(where), "statuses": ("failed",)})
    return (
        select(func.coalesce(ERROR_CODE, literal("UNKNOWN")).label("code"),
               SIGNATURE.label("signature"),
               func.count().label("count"),
               func.array_agg(func.distinct(jobs.c.kind)).label("kinds"),
               func.min(jobs.c.finished_at).label("first_at"),
               func.max(jobs.c.finished_at).label("last_at"),
               func.min(ERROR_MESSAGE).label("example"))
        .where(*failed.conditions())
        # By position: the expressions carry bound parameters, which Postgres does not
        # see as the same expression in SELECT and GROUP BY.
        .group_by(literal_column("1"), literal_column("2"))
        .order_by(func.count().desc(), func.max(jobs.c.finished_at).desc())
        .limit(limit)
    )


def matching(where: JobFilter, *, limit: int) -> Select[Any]:
    """Ids and owners of the jobs a bulk action would touch, oldest first."""
    return (select(jobs.c.id, jobs.c.owner_id).where(*where.conditions())
            .order_by(jobs.c.created_at, jobs.c.id).limit(limit))


def count(where: JobFilter) -> Select[Any]:
    return select(func.count()).select_from(jobs).where(*where.conditions())


def _fields(where: JobFilter) -> dict[str, Any]:
    return {name: getattr(where, name) for name in JobFilter.__dataclass_fields__}
