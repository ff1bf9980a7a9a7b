"""Credentials: password hashing, API keys and session tokens. No I/O, no web framework.

Passwords are low-entropy, so they get Argon2 (slow on purpose). API keys are 32 random
bytes, so a single SHA-256 is as strong as any slow hash and keeps key lookup an index
probe. Session tokens are HS256 JWTs whose `jti` names a `sessions` row, so they can be
revoked before they expire.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Only for development: a process without SWITCHYARD_SECRET_KEY signs with this, so tokens
# survive restarts and work across local replicas, but anyone can forge them. Logged loudly;
# outside development the API and workers refuse to start with it.
from schemas.settings import DEV_SECRET_KEY

log = logging.getLogger("switchyard.accounts")

KEY_PREFIX = "sy-"
# Characters of a key shown in lists: enough to tell keys apart, far too few to guess it.
SHOWN_KEY_CHARS = 10
_KEY_RANDOM_BYTES = 32
_JWT_ALGORITHM = "HS256"
_JWT_ISSUER = "switchyard"
MIN_SECRET_KEY_BYTES = 32

_hasher = PasswordHasher()
# Verified against when the account does not exist, so an unknown email costs the same
# Argon2 work as a wrong password and response times do not reveal which emails exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class InvalidToken(Exception):
    """A session token with a bad signature, a wrong issuer, or past its expiry."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made API key: `key` is shown to its owner once and never stored."""

    key: str
    prefix: str
    key_hash: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively; they are stored this way."""
    return email.strip().lower()


def hash_password(password: str) -> str:
    """An Argon2id hash with a random salt, in the PHC string format."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing hash still costs one Argon2 verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)


def new_api_key() -> NewKey:
    """`sy-` followed by 43 URL-safe characters (256 random bits)."""
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_RANDOM_BYTES)
    return NewKey(key=key, prefix=key[:SHOWN_KEY_CHARS], key_hash=key_digest(key))


def key_digest(key: str) -> str:
    """The stored form of an API key (and the cache key for any credential)."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak matching prefixes."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def secret_key_or_dev(secret_key: str | None) -> str:
    """The signing key, or the development key with a warning when none is configured.

    HS256 needs at least 32 bytes of key (RFC 7518 3.2); a shorter one is refused.
    """
    if secret_key:
        if len(secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"SWITCHYARD_SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} "
                             "bytes long")
        return secret_key
    log.warning("SWITCHYARD_SECRET_KEY is not set: signing sessions with the development "
                "key; anyone can forge them. Set it in production.")
    return DEV_SECRET_KEY


def issue_token(user_id: str, secret_key: str, ttl_s: int,
                now: datetime | None = None) -> IssuedToken:
    """A signed session token for `user_id`, valid for `ttl_s` seconds from `now`."""
    issued_at = now or datetime.now(UTC)
    expires_at = issued_at + timedelta(seconds=ttl_s)
    jti = uuid.uuid4().hex
    claims = {"sub": user_id, "jti": jti, "iss": _JWT_ISSUER,
              "iat": int(issued_at.timestamp()), "exp": int(expires_at.timestamp())}
    token = jwt.encode(claims, secret_key, algorithm=_JWT_ALGORITHM)
    return IssuedToken(token=token, jti=jti, expires_at=expires_at)


def decode_token(token: str, secret_key: str) -> dict[str, object]:
    """The claims of a valid token; raises InvalidToken for anything else (never says why)."""
    try:
        claims: dict[str, object] = jwt.decode(
            token, secret_key, algorithms=[_JWT_ALGORITHM], issuer=_JWT_ISSUER,
            options={"require": ["sub", "jti", "exp", "iat"]})
    except jwt.PyJWTError:
        raise InvalidToken("invalid session token") from None
    return claims
