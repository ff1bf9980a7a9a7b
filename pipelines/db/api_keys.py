"""Every SQL statement about API keys (the `api_keys` table; Redis key names are elsewhere)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Insert, Select, Update, func, insert, or_, select, update

from pipelines.db.tables import api_keys, users

# Never the hash: what a key's owner may see again after creation.
PUBLIC_COLUMNS = (api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.scopes,
                  api_keys.c.created_at, api_keys.c.last_used_at, api_keys.c.expires_at,
                  api_keys.c.revoked_at)


def insert_key(*, user_id: str, name: str, prefix: str, key_hash: str, scopes: list[str],
               expires_at: datetime | None) -> Insert:
    return insert(api_keys).values(
        id=str(uuid.uuid4()), user_id=user_id, name=name, prefix=prefix, key_hash=key_hash,
        scopes=scopes, expires_at=expires_at,
    ).returning(*PUBLIC_COLUMNS)


def usable_by_hash(key_hash: str) -> Select:
    """The key and its owner, if the key is unrevoked and unexpired; `is_active` says
    whether the owner's account is enabled (a disabled one is refused with 403)."""
    return (
        select(api_keys.c.id, api_keys.c.scopes, api_keys.c.expires_at, api_keys.c.last_used_at,
               users.c.id.label("user_id"), users.c.role, users.c.tier, users.c.is_active)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None),
               or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > func.now()))
    )


def touch(key_id: str, min_interval_s: float) -> Update:
    """Record use, at most once per `min_interval_s`, so busy keys do not write per request."""
    stale = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, min_interval_s)
    return (update(api_keys)
            .where(api_keys.c.id == key_id,
                   or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < stale))
            .values(last_used_at=func.now()))


def list_for_user(user_id: str) -> Select:
    """A user's keys, revoked ones too (a revoked key shows its revocation time)."""
    return (select(*PUBLIC_COLUMNS).where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc()))


def revoke(key_id: str, user_id: str) -> Update:
    """Someone else's key, or an already revoked one, matches nothing."""
    return (update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id,
                   api_keys.c.revoked_at.is_(None))
            .values(revoked_at=func.now()).returning(*PUBLIC_COLUMNS))
