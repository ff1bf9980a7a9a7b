"""Every SQL statement about login sessions (one row per issued token's `jti`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Insert, Select, Update, func, insert, select, update

from pipelines.db.tables import sessions, users


def insert_session(*, jti: str, user_id: str, expires_at: datetime) -> Insert:
    return insert(sessions).values(jti=jti, user_id=user_id, expires_at=expires_at)


def usable(jti: str, user_id: str) -> Select:
    """The session's user, if the session is unrevoked, unexpired and the user active."""
    return (
        select(users.c.id, users.c.role, users.c.tier, sessions.c.expires_at)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.jti == jti, sessions.c.user_id == user_id,
               sessions.c.revoked_at.is_(None), sessions.c.expires_at > func.now(),
               users.c.is_active.is_(True))
    )


def revoke(jti: str) -> Update:
    return (update(sessions).where(sessions.c.jti == jti, sessions.c.revoked_at.is_(None))
            .values(revoked_at=func.now()))


def revoke_all_for_user(user_id: str) -> Update:
    return (update(sessions).where(sessions.c.user_id == user_id,
                                   sessions.c.revoked_at.is_(None))
            .values(revoked_at=func.now()))
