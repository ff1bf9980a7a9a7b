"""API keys: create (the key is shown once), list, revoke, and validate the one in use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticator, is_user
from api.bodies import json_response as json
from api.bodies import parse, path_id
from api.context import Principal, principal, services
from api.errors import ApiError
from api.openapi import doc
from api.scopes import SCOPES, granted
from pipelines import accounts
from pipelines.db import api_keys as keys_db
from pipelines.errors import ApiKeyNotFound, PermissionDenied
from schemas.accounts import KeyCreate, KeyCreated, KeyList, KeyRead, KeyValidation

_KEY_BODY_LIMIT = 64 * 1024


@doc("Create an API key; the response is the only time the full key is shown",
     body=KeyCreate, response=KeyCreated, status=201, tags=["keys"])
async def create_key(request: Request) -> Response:
    who = principal(request)
    if not is_user(who):
        raise PermissionDenied("The bootstrap admin key cannot own API keys; create a user "
                               "(POST /v1/admin/users) and log in as them.")
    body = await parse(request, KeyCreate, _KEY_BODY_LIMIT)
    scopes = narrowed_scopes(who, body.scopes)
    new = accounts.new_api_key()
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(keys_db.insert_key(
            user_id=who.id, name=body.name, prefix=new.prefix, key_hash=new.key_hash,
            scopes=scopes, expires_at=body.expires_at))).one()
    created = KeyCreated(key=new.key, **KeyRead.model_validate(row, from_attributes=True)
                         .model_dump())
    return json(created, status=201)


def narrowed_scopes(who: Principal, wanted: list[str]) -> list[str]:
    """The new key's scopes: known names only, and never wider than the creating key's
    (a scoped key that asks for none gets its own scopes, not all of its owner's)."""
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"Unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}.",
                       param="scopes")
    if not who.scopes:
        return list(dict.fromkeys(wanted))
    if not wanted:
        return list(who.scopes)
    wider = sorted(set(wanted) - granted(who.scopes))
    if wider:
        raise PermissionDenied(f"A key cannot create a key with scopes it lacks: "
                               f"{', '.join(wider)}.")
    return list(dict.fromkeys(wanted))


@doc("The caller's API keys, newest first (revoked ones show `revoked_at`)",
     response=KeyList, tags=["keys"])
async def list_keys(request: Request) -> Response:
    who = principal(request)
    rows: Sequence[Row[Any]] = ()
    if is_user(who):
        async with services(request).autocommit.connect() as conn:
            rows = (await conn.execute(keys_db.list_for_user(who.id))).all()
    return json(KeyList(data=[KeyRead.model_validate(r, from_attributes=True) for r in rows]))


@doc("Revoke one of the caller's API keys; it stops working at once", response=KeyRead,
     tags=["keys"])
async def revoke_key(request: Request) -> Response:
    who = principal(request)
    key_id = path_id(request, "key_id", ApiKeyNotFound, "API key")
    row = None
    if is_user(who):
        async with services(request).engine.begin() as conn:
            row = (await conn.execute(keys_db.revoke(key_id, who.id))).first()
    if row is None:
        raise ApiKeyNotFound(f"No active API key with id '{key_id}'.")
    await authenticator(request).revoked(who.id)
    return json(KeyRead.model_validate(row, from_attributes=True))


@doc("Check the credential of this request and say whose it is", response=KeyValidation,
     tags=["keys"])
async def validate_key(request: Request) -> Response:
    who = principal(request)
    return json(KeyValidation(valid=True, user_id=who.id, role=who.role,  # type: ignore[arg-type]
                              key_id=who.key_id, scopes=list(who.scopes)))


routes = [
    Route("/v1/keys", create_key, methods=["POST"]),
    Route("/v1/keys", list_keys, methods=["GET"]),
    Route("/v1/keys/validate", validate_key, methods=["GET"]),
    Route("/v1/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
