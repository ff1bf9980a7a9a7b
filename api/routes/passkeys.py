"""Passkeys (WebAuthn), STING's four routes: register (signed in) and log in, each as
init (options with a fresh challenge) then complete (the browser's response). A passkey
login answers exactly what password login does. Also: list and remove your passkeys.

The ceremony itself is pipelines/passkeys.py; challenges are single-use and expire
(WEBAUTHN_CHALLENGE_TTL_S). A response's challenge is read from its client data and
taken from Redis before verification, so a replay or a stale response is refused.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import is_user
from api.bodies import json_response as json
from api.bodies import parse
from api.context import Services, principal, services
from api.openapi import doc
from api.routes.auth import start_session
from pipelines import accounts, passkeys
from pipelines.db import passkeys as passkeys_db
from pipelines.db import users as users_db
from pipelines.errors import Conflict, NotFound, PermissionDenied
from schemas.accounts import LoginResponse
from schemas.passkeys import (
    PasskeyList,
    PasskeyLoginComplete,
    PasskeyLoginInit,
    PasskeyOptions,
    PasskeyRead,
    PasskeyRegisterComplete,
    PasskeyRegisterInit,
)
from schemas.settings import Settings

_BODY_LIMIT = 64 * 1024


class PasskeyNotFound(NotFound):
    code = "RESOURCE_NOT_FOUND"


def relying_party(settings: Settings) -> passkeys.RelyingParty:
    return passkeys.RelyingParty(rp_id=settings.webauthn_rp_id,
                                 rp_name=settings.webauthn_rp_name,
                                 origins=tuple(settings.webauthn_origins))


def _rp(svc: Services) -> passkeys.RelyingParty:
    return relying_party(svc.settings)


@doc("Start registering a passkey for the signed-in user: options for "
     "navigator.credentials.create()", body=PasskeyRegisterInit, response=PasskeyOptions,
     tags=["auth"])
async def register_init(request: Request) -> Response:
    who = principal(request)
    if not is_user(who):
        raise PermissionDenied("The bootstrap admin key has no account to add a passkey to.")
    svc = services(request)
    await parse(request, PasskeyRegisterInit, _BODY_LIMIT)
    async with svc.autocommit.connect() as conn:
        user = (await conn.execute(users_db.get(who.id))).one()
        existing = list((await conn.execute(passkeys_db.ids_for_user(who.id))).scalars())
    options, challenge = passkeys.registration_options(
        _rp(svc), user_id=who.id, user_name=user.email, display_name=user.name,
        existing=existing)
    ttl_s = svc.settings.webauthn_challenge_ttl_s
    await passkeys.store_challenge(svc.redis, svc.keys, challenge, purpose="register",
                                   user_id=who.id, ttl_s=ttl_s)
    return json(PasskeyOptions(options=options, expires_in=ttl_s))


@doc("Finish registering a passkey with the browser's credential", body=PasskeyRegisterComplete,
     response=PasskeyRead, status=201, tags=["auth"])
async def register_complete(request: Request) -> Response:
    who = principal(request)
    svc = services(request)
    body = await parse(request, PasskeyRegisterComplete, _BODY_LIMIT)
    challenge = await passkeys.take_challenge(
        svc.redis, svc.keys, passkeys.challenge_of(body.credential), purpose="register",
        user_id=who.id)
    if challenge is None:
        raise passkeys.PasskeyRegistrationRejected(
            "Unknown, used or expired challenge: start again with register/init.")
    new = passkeys.verify_registration(_rp(svc), body.credential, challenge)
    try:
        async with svc.engine.begin() as conn:
            row = (await conn.execute(passkeys_db.insert_credential(
                credential_id=new.id, user_id=who.id, public_key=new.public_key,
                sign_count=new.sign_count, name=body.name or "passkey",
                transports=new.transports, aaguid=new.aaguid))).one()
    except IntegrityError:
        raise Conflict("This passkey is already registered.") from None
    return json(PasskeyRead.model_validate(row, from_attributes=True), status=201)


@doc("Start a passkey login: options for navigator.credentials.get()",
     body=PasskeyLoginInit, response=PasskeyOptions, tags=["auth"])
async def login_init(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, PasskeyLoginInit, _BODY_LIMIT)
    allowed: list[str] = []
    if body.email:
        async with svc.autocommit.connect() as conn:
            user = (await conn.execute(users_db.by_email(
                accounts.normalize_email(body.email)))).first()
            if user is not None:
                allowed = list((await conn.execute(
                    passkeys_db.ids_for_user(str(user.id)))).scalars())
    # An unknown email gets options too (empty list), so this does not reveal accounts.
    options, challenge = passkeys.authentication_options(_rp(svc), allowed)
    ttl_s = svc.settings.webauthn_challenge_ttl_s
    await passkeys.store_challenge(svc.redis, svc.keys, challenge, purpose="login",
                                   user_id=None, ttl_s=ttl_s)
    return json(PasskeyOptions(options=options, expires_in=ttl_s))


@doc("Finish a passkey login; answers like password login (a session token)",
     body=PasskeyLoginComplete, response=LoginResponse, tags=["auth"])
async def login_complete(request: Request) -> Response:
    svc = services(request)
    body = await parse(request, PasskeyLoginComplete, _BODY_LIMIT)
    challenge = await passkeys.take_challenge(
        svc.redis, svc.keys, passkeys.challenge_of(body.assertion), purpose="login")
    if challenge is None:
        raise passkeys.PasskeyRejected("Unknown, used or expired challenge.")
    credential_id = body.assertion.get("id")
    if not isinstance(credential_id, str) or not 0 < len(credential_id) <= 1024:
        raise passkeys.PasskeyRejected("The assertion names no passkey.")
    async with svc.autocommit.connect() as conn:
        found = (await conn.execute(passkeys_db.for_login(credential_id))).first()
    if found is None or not found.is_active:
        raise passkeys.PasskeyRejected("No such passkey, or its account is disabled.")
    new_count = passkeys.verify_login(_rp(svc), body.assertion, challenge,
                                      public_key=found.public_key,
                                      sign_count=found.sign_count)
    async with svc.engine.begin() as conn:
        advanced = (await conn.execute(passkeys_db.advance_counter(
            credential_id, found.sign_count, new_count))).first()
        user = (await conn.execute(users_db.get(str(found.user_id)))).one()
    if advanced is None:
        raise passkeys.PasskeyRejected("The passkey was used concurrently; try again.")
    return json(await start_session(svc, user))


@doc("The signed-in user's passkeys", response=PasskeyList, tags=["auth"])
async def list_passkeys(request: Request) -> Response:
    who = principal(request)
    rows = []
    if is_user(who):
        async with services(request).autocommit.connect() as conn:
            rows = list((await conn.execute(passkeys_db.list_for_user(who.id))).all())
    return json(PasskeyList(data=[PasskeyRead.model_validate(r, from_attributes=True)
                                  for r in rows]))


@doc("Remove one of your passkeys; it can no longer log in", status=204, tags=["auth"])
async def remove_passkey(request: Request) -> Response:
    who = principal(request)
    credential_id = request.path_params["credential_id"]
    removed = None
    if is_user(who) and len(credential_id) <= 1024:
        async with services(request).engine.begin() as conn:
            removed = (await conn.execute(passkeys_db.remove(credential_id, who.id))).first()
    if removed is None:
        raise PasskeyNotFound(f"No passkey with id '{credential_id}'.")
    return Response(status_code=204)


routes = [
    Route("/v1/auth/webauthn/register/init", register_init, methods=["POST"]),
    Route("/v1/auth/webauthn/register/complete", register_complete, methods=["POST"]),
    Route("/v1/auth/webauthn/login/init", login_init, methods=["POST"]),
    Route("/v1/auth/webauthn/login/complete", login_complete, methods=["POST"]),
    Route("/v1/auth/webauthn/credentials", list_passkeys, methods=["GET"]),
    Route("/v1/auth/webauthn/credentials/{credential_id}", remove_passkey,
          methods=["DELETE"]),
]
