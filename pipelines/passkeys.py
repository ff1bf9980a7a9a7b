"""Passkeys (WebAuthn) with the `webauthn` library (duo-labs py_webauthn 3.x): option
building and response verification, plus single-use challenges in Redis. No web framework.

The library checks the signature, the challenge, the origin, the RP ID hash and that the
sign counter grew; this module adds what it leaves to the caller: a challenge is stored
under its own value with an expiry and taken with GETDEL, so a response can be verified
against it once only (a replayed response finds nothing), and a challenge made for one
user's registration cannot complete another ceremony.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from pipelines.errors import InvalidCredentials, InvalidInput
from pipelines.keys import Keys

log = logging.getLogger("switchyard.passkeys")


class PasskeyRejected(InvalidCredentials):
    """A login assertion that does not verify (signature, origin, RP ID, challenge,
    counter) or names no registered passkey."""

    code = "INVALID_CREDENTIALS"


class PasskeyRegistrationRejected(InvalidInput):
    """A registration response that does not verify, or whose challenge is unknown."""

    code = "PASSKEY_REJECTED"


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the passkeys are for: the RP ID (a registrable domain) and accepted origins."""

    rp_id: str
    rp_name: str
    origins: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewPasskey:
    id: str  # base64url credential id
    public_key: bytes
    sign_count: int
    aaguid: str
    transports: list[str]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def registration_options(rp: RelyingParty, *, user_id: str, user_name: str,
                         display_name: str | None,
                         existing: list[str]) -> tuple[dict[str, Any], bytes]:
    """`publicKey` options for navigator.credentials.create(), and their challenge."""
    options = generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.rp_name, user_id=user_id.encode(), user_name=user_name,
        user_display_name=display_name or user_name,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=from_b64url(c))
                             for c in existing],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED))
    return orjson.loads(options_to_json(options)), options.challenge


def authentication_options(rp: RelyingParty,
                           allowed: list[str]) -> tuple[dict[str, Any], bytes]:
    """`publicKey` options for navigator.credentials.get() (empty `allowed`: any
    discoverable passkey for this RP), and their challenge."""
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        allow_credentials=[PublicKeyCredentialDescriptor(id=from_b64url(c)) for c in allowed],
        user_verification=UserVerificationRequirement.PREFERRED)
    return orjson.loads(options_to_json(options)), options.challenge


def challenge_of(response: dict[str, Any]) -> str | None:
    """The challenge (base64url) a credential response answers, read from its client
    data; None when the response is not shaped like one."""
    try:
        client_data = orjson.loads(from_b64url(response["response"]["clientDataJSON"]))
        challenge = client_data["challenge"]
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None
    return challenge if isinstance(challenge, str) and 0 < len(challenge) <= 256 else None


def verify_registration(rp: RelyingParty, credential: dict[str, Any],
                        challenge: bytes) -> NewPasskey:
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins))
    except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
        raise PasskeyRegistrationRejected(f"The passkey registration was refused: {exc}"
                                          ) from None
    transports = credential.get("response", {}).get("transports") or []
    return NewPasskey(id=b64url(verified.credential_id),
                      public_key=verified.credential_public_key,
                      sign_count=verified.sign_count, aaguid=str(verified.aaguid),
                      transports=[str(t) for t in transports if isinstance(t, str)][:8])


def verify_login(rp: RelyingParty, assertion: dict[str, Any], challenge: bytes, *,
                 public_key: bytes, sign_count: int) -> int:
    """The authenticator's new sign count; PasskeyRejected when anything does not check
    out (a counter that did not grow means a cloned authenticator)."""
    try:
        verified = verify_authentication_response(
            credential=assertion, expected_challenge=challenge, expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins), credential_public_key=public_key,
            credential_current_sign_count=sign_count)
    except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
        if "sign count" in str(exc).lower():
            log.warning("passkey sign counter did not grow: possibly a cloned authenticator")
        raise PasskeyRejected(f"The passkey could not be verified: {exc}") from None
    return int(verified.new_sign_count)


# -- single-use challenges -------------------------------------------------------------

async def store_challenge(redis: Redis, keys: Keys, challenge: bytes, *, purpose: str,
                          user_id: str | None, ttl_s: int) -> None:
    """Remember a challenge for `purpose` ("register" or "login") for `ttl_s` seconds."""
    await redis.set(keys.webauthn_challenge(b64url(challenge)),
                    orjson.dumps({"purpose": purpose, "user_id": user_id}), ex=ttl_s)


async def take_challenge(redis: Redis, keys: Keys, challenge: str | None, *,
                         purpose: str, user_id: str | None = None) -> bytes | None:
    """The challenge's bytes if it was issued for this purpose (and user) and not yet
    used or expired; it is consumed either way."""
    if challenge is None:
        return None
    raw = await redis.getdel(keys.webauthn_challenge(challenge))
    if raw is None:
        return None
    stored = orjson.loads(raw)
    if stored.get("purpose") != purpose or (
            user_id is not None and stored.get("user_id") != user_id):
        return None
    return from_b64url(challenge)
