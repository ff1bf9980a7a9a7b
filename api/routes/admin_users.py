"""Admin: create, list, read, update and deactivate users. Every handler checks the role
first, so a non-admin learns nothing, not even whether an id exists."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticator, insert_user, require_admin
from api.bodies import int_query, parse, path_id
from api.bodies import json_response as json
from api.context import services
from api.openapi import doc
from pipelines import accounts
from pipelines.db import sessions as sessions_db
from pipelines.db import users as users_db
from pipelines.errors import UserNotFound
from schemas.accounts import UserCreate, UserList, UserRead, UserUpdate

_MAX_PAGE = 200


@doc("Create a user (any role)", body=UserCreate, response=UserRead, status=201,
     tags=["admin"])
async def create_user(request: Request) -> Response:
    require_admin(request)
    svc = services(request)
    body = await parse(request, UserCreate, svc.settings.max_json_body_bytes)
    password_hash = await anyio.to_thread.run_sync(accounts.hash_password, body.password)
    async with svc.engine.begin() as conn:
        row = await insert_user(conn, users_db.insert_user(
            email=accounts.normalize_email(body.email), password_hash=password_hash,
            name=body.name, role=body.role, tier=body.tier))
    return json(UserRead.model_validate(row, from_attributes=True), status=201)


@doc("All users, oldest first", response=UserList,
     query={"limit": "integer", "offset": "integer"}, tags=["admin"])
async def list_users(request: Request) -> Response:
    require_admin(request)
    limit = int_query(request, "limit", 50, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 10**9)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(users_db.list_page(limit=limit, offset=offset))).all()
        total = (await conn.execute(users_db.count())).scalar_one()
    return json(UserList(users=[UserRead.model_validate(r, from_attributes=True) for r in rows],
                         total=total, limit=limit, offset=offset))


@doc("One user", response=UserRead, tags=["admin"])
async def get_user(request: Request) -> Response:
    require_admin(request)
    user_id = _user_id(request)
    async with services(request).autocommit.connect() as conn:
        row = (await conn.execute(users_db.get(user_id))).first()
    if row is None:
        raise UserNotFound(f"No user with id '{user_id}'.")
    return json(UserRead.model_validate(row, from_attributes=True))


@doc("Change a user's name, role, tier, password or active flag", body=UserUpdate,
     response=UserRead, tags=["admin"])
async def update_user(request: Request) -> Response:
    require_admin(request)
    svc = services(request)
    user_id = _user_id(request)
    body = await parse(request, UserUpdate, svc.settings.max_json_body_bytes)
    values: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"password"})
    if body.password is not None:
        values["password_hash"] = await anyio.to_thread.run_sync(accounts.hash_password,
                                                                 body.password)
    return json(await _apply(request, user_id, values))


@doc("Deactivate a user: their sessions are revoked and their keys stop working at once",
     response=UserRead, tags=["admin"])
async def deactivate_user(request: Request) -> Response:
    require_admin(request)
    return json(await _apply(request, _user_id(request), {"is_active": False}))


async def _apply(request: Request, user_id: str, values: dict[str, Any]) -> UserRead:
    """Update the row; any change can alter what a cached credential grants, so every
    replica re-verifies (and a deactivation or new password also ends all sessions)."""
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(users_db.patch(user_id, values))).first()
        if row is None:
            raise UserNotFound(f"No user with id '{user_id}'.")
        if values.get("is_active") is False or "password_hash" in values:
            await conn.execute(sessions_db.revoke_all_for_user(user_id))
    await authenticator(request).revoked(user_id)
    return UserRead.model_validate(row, from_attributes=True)


def _user_id(request: Request) -> str:
    return path_id(request, "user_id", UserNotFound, "user")



routes = [
    Route("/v1/admin/users", create_user, methods=["POST"]),
    Route("/v1/admin/users", list_users, methods=["GET"]),
    Route("/v1/admin/users/{user_id}", get_user, methods=["GET"]),
    Route("/v1/admin/users/{user_id}", update_user, methods=["PATCH"]),
    Route("/v1/admin/users/{user_id}/deactivate", deactivate_user, methods=["POST"]),
]
