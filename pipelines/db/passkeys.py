"""Every SQL statement about passkeys (`webauthn_credentials`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, Select, Update, delete, func, insert, select, update
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import users, webauthn_credentials

creds = webauthn_credentials
# What a passkey's owner may see (never the public key bytes: of no use to a client).
PUBLIC_COLUMNS = (creds.c.id, creds.c.name, creds.c.sign_count, creds.c.transports,
                  creds.c.aaguid, creds.c.created_at, creds.c.last_used_at)


def insert_credential(*, credential_id: str, user_id: str, public_key: bytes, sign_count: int,
                      name: str, transports: list[str], aaguid: str) -> Insert:
    return insert(creds).values(
        id=credential_id, user_id=user_id, public_key=public_key, sign_count=sign_count,
        name=name, transports=transports, aaguid=aaguid).returning(*PUBLIC_COLUMNS)


def ids_for_user(user_id: str) -> Select:
    return select(creds.c.id).where(creds.c.user_id == user_id)


def list_for_user(user_id: str) -> Select:
    return (select(*PUBLIC_COLUMNS).where(creds.c.user_id == user_id)
            .order_by(creds.c.created_at, creds.c.id))


def for_login(credential_id: str) -> Select:
    """The passkey and its user (with what login returns), whatever the user's state."""
    return (select(creds.c.id, creds.c.public_key, creds.c.sign_count,
                   users.c.id.label("user_id"), users.c.is_active)
            .join(users, users.c.id == creds.c.user_id).where(creds.c.id == credential_id))


def advance_counter(credential_id: str, seen: int, new: int) -> Update:
    """Store the new sign count only if nobody advanced it meanwhile (two logins racing
    with one assertion each: the second matches nothing)."""
    return (update(creds).where(creds.c.id == credential_id, creds.c.sign_count == seen)
            .values(sign_count=new, last_used_at=func.now()).returning(creds.c.id))


def remove(credential_id: str, user_id: str) -> ReturningDelete[Any]:
    return (delete(creds).where(creds.c.id == credential_id, creds.c.user_id == user_id)
            .returning(creds.c.id))
