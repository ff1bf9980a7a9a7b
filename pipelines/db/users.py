"""Every SQL statement about users."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Insert, Select, Update, func, insert, select, update

from pipelines.db.tables import users

# Everything but the password hash: what may be rendered back to a client.
PUBLIC_COLUMNS = (users.c.id, users.c.email, users.c.name, users.c.role, users.c.tier,
                  users.c.is_active, users.c.created_at, users.c.updated_at)


def new_user_id() -> str:
    return str(uuid.uuid4())


def insert_user(*, email: str, password_hash: str | None, name: str | None = None,
                role: str = "user", tier: str = "default") -> Insert:
    """`email` must already be normalized (lowercase); a duplicate violates the unique index."""
    return insert(users).values(
        id=new_user_id(), email=email, name=name, password_hash=password_hash, role=role,
        tier=tier,
    ).returning(*PUBLIC_COLUMNS)


def by_email(email: str) -> Select:
    """Includes the password hash: for login only."""
    return select(users).where(users.c.email == email)


def get(user_id: str) -> Select:
    return select(*PUBLIC_COLUMNS).where(users.c.id == user_id)


def list_page(*, limit: int, offset: int) -> Select:
    return select(*PUBLIC_COLUMNS).order_by(users.c.created_at, users.c.id).limit(
        limit).offset(offset)


def count() -> Select:
    return select(func.count()).select_from(users)


def patch(user_id: str, values: dict[str, Any]) -> Update:
    """Set the given columns (name, role, tier, is_active, password_hash)."""
    return (update(users).where(users.c.id == user_id)
            .values(updated_at=func.now(), **values).returning(*PUBLIC_COLUMNS))
