"""Sessions: log in (a JWT), log out (revoke it), who am I, and register."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import as_dict, authenticator, insert_user, is_user
from api.bodies import json_response as json
from api.bodies import parse
from api.context import Principal, Services, services
from api.errors import ApiError
from api.limits import client_address
from api.openapi import doc
from pipelines import accounts
from pipelines.db import sessions as sessions_db
from pipelines.db import users as users_db
from pipelines.errors import InvalidCredentials, PermissionDenied
from schemas.accounts import (
    LoginRequest,
    LoginResponse,
    LogoutResponse,
    RegisterRequest,
    SessionRead,
    UserRead,
)

_AUTH_BODY_LIMIT = 64 * 1024


@doc("Log in with email and password; returns a session token (JWT)", body=LoginRequest,
     response=LoginResponse, tags=["auth"])
async def login(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, LoginRequest, _AUTH_BODY_LIMIT)
    email = accounts.normalize_email(body.email)
    address = client_address(request.scope)
    if svc.limiter is not None:
        await svc.limiter.check_login(email, address)
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(users_db.by_email(email))).first()
    # Argon2 is deliberately slow: keep it off the event loop.
    ok = await anyio.to_thread.run_sync(
        accounts.verify_password, row.password_hash if row else None, body.password)
    if not ok or row is None or not row.is_active:
        if svc.limiter is not None:
            await svc.limiter.login_failed(email, address)
        raise InvalidCredentials("The email or password is wrong.")
    return json(await start_session(svc, row))


async def start_session(svc: Services, user: Any) -> LoginResponse:
    """A session token for `user` (a users row), recorded so it can be revoked: what
    password and passkey logins both answer."""
    issued = accounts.issue_token(str(user.id), svc.auth.secret_key,
                                  svc.settings.session_ttl_s)
    async with svc.engine.begin() as conn:
        await conn.execute(sessions_db.insert_session(
            jti=issued.jti, user_id=str(user.id), expires_at=issued.expires_at))
    return LoginResponse(access_token=issued.token, expires_in=svc.settings.session_ttl_s,
                         user=UserRead.model_validate(user, from_attributes=True))


@doc("Revoke the session token used for this request", response=LogoutResponse,
     tags=["auth"])
async def logout(request: Request) -> Response:
    who: Principal = request.scope["state"]["principal"]
    revoked = False
    if who.session_id is not None:
        async with services(request).engine.begin() as conn:
            revoked = (await conn.execute(sessions_db.revoke(who.session_id))).rowcount > 0
        await authenticator(request).revoked(who.id)
    return json(LogoutResponse(revoked=revoked))


@doc("Who is calling, their role and what it may do, and how they authenticated",
     response=SessionRead, tags=["auth"])
async def session(request: Request) -> Response:
    who: Principal = request.scope["state"]["principal"]
    user = None
    if is_user(who):
        async with services(request).autocommit.connect() as conn:
            row = (await conn.execute(users_db.get(who.id))).first()
        user = UserRead.model_validate(row, from_attributes=True) if row else None
    return json(SessionRead(authenticated=True, role=who.role, permissions=who.permissions,
                            user=user, **as_dict(who)))


@doc("Create an account (open registration, or an admin when registration is closed)",
     body=RegisterRequest, response=UserRead, status=201, tags=["auth"])
async def register(request: Request) -> Response:
    svc = services(request)
    who: Principal | None = request.scope.get("state", {}).get("principal")
    if not svc.settings.open_registration:
        if who is None:
            raise ApiError(401, "AUTHENTICATION_REQUIRED",
                           "Registration is closed: an administrator creates accounts.",
                           headers={"WWW-Authenticate": "Bearer"})
        if not who.is_admin:
            raise PermissionDenied("Registration is closed: an administrator creates accounts.")
    body = await parse(request, RegisterRequest, _AUTH_BODY_LIMIT)
    password_hash = await anyio.to_thread.run_sync(accounts.hash_password, body.password)
    async with svc.engine.begin() as conn:
        row = await insert_user(conn, users_db.insert_user(
            email=accounts.normalize_email(body.email), password_hash=password_hash,
            name=body.name))
    return json(UserRead.model_validate(row, from_attributes=True), status=201)


routes = [
    Route("/v1/auth/login", login, methods=["POST"]),
    Route("/v1/auth/logout", logout, methods=["POST"]),
    Route("/v1/auth/session", session, methods=["GET"]),
    Route("/v1/auth/register", register, methods=["POST"]),
]
# Reached without credentials; register checks for an admin itself when it is closed.
PUBLIC_PATHS = frozenset({"/v1/auth/login", "/v1/auth/webauthn/login/init",
                          "/v1/auth/webauthn/login/complete"})
OPTIONAL_AUTH_PATHS = frozenset({"/v1/auth/register"})
