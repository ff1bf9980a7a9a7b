"""Who is calling: the bootstrap admin key, stored API keys (`sy-…`) or session tokens (JWTs).

Verified credentials are cached in-process for `cache_ttl_s`, keyed by their SHA-256, so a
busy key costs no I/O at all. Every revocation (key revoked, logout, user deactivated or
changed) is published on a Redis channel; each API process receives it over its one pub/sub
connection (api/hub.py) and drops that user's cached credentials, so revocation takes
effect on every replica at once. Two races are closed:
- a lookup that began before a notice and ends after it is not cached (the generation
  moved), so it cannot re-insert what the notice removed;
- when the pub/sub connection drops, notices may have been missed, so the whole cache is
  dropped once the hub has resubscribed (and entries expire after `cache_ttl_s` anyway).

Credentials that are not cached cost a database lookup, so invalid ones are counted per
client address and refused (429) before the lookup once too many have failed.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import HTTPConnection
from starlette.types import Scope

from api.context import Principal, principal
from api.limits import client_address, remember_auth_window
from pipelines import accounts
from pipelines.db import api_keys as keys_db
from pipelines.db import sessions as sessions_db
from pipelines.errors import EmailTaken, PermissionDenied
from pipelines.keys import Keys
from schemas.accounts import ACT_JOBS, ADMIN, READ, Permission
from schemas.settings import Settings

log = logging.getLogger("switchyard.auth")

BOOTSTRAP_KEY_ID = "bootstrap"
BOOTSTRAP_USER_ID = "admin"
_MAX_CACHED = 10_000
# Writes to `api_keys.last_used_at` at most this often per key.
_TOUCH_INTERVAL_S = 60.0
# Clock skew allowed between the replica that issued a session token and the one reading it.
_CLOCK_SKEW_S = 60


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    fresh_until: float  # time.monotonic()
    expires_at: float | None  # time.time() when the key or session itself expires


class Authenticator:
    """Maps a presented credential to a Principal, or None. Never logs the credential."""

    def __init__(self, engine: AsyncEngine, redis: Redis, keys: Keys, *, secret_key: str,
                 bootstrap_key: str | None, bootstrap_tier: str,
                 cache_ttl_s: float, session_ttl_s: int) -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.redis = redis
        self.keys = keys
        self.secret_key = secret_key
        self.bootstrap_key = bootstrap_key
        self.cache_ttl_s = cache_ttl_s
        self.session_ttl_s = session_ttl_s
        self._bootstrap = Principal(id=BOOTSTRAP_USER_ID, role="admin", key_id=BOOTSTRAP_KEY_ID,
                                    tier=bootstrap_tier)
        self._cache: dict[str, _Cached] = {}
        # Bumped by every revocation notice: a lookup that saw it move does not cache.
        self._generation = 0

    @property
    def revocation_channel(self) -> str:
        return self.keys.auth_revocations()

    def cached(self, credential: str) -> Principal | None:
        """The caller, when known without I/O: the bootstrap key or a fresh cached entry."""
        if self.bootstrap_key is not None and accounts.same_secret(credential,
                                                                   self.bootstrap_key):
            return self._bootstrap
        digest = accounts.key_digest(credential)
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if time.monotonic() < entry.fresh_until and (
                entry.expires_at is None or time.time() < entry.expires_at):
            return entry.principal
        del self._cache[digest]
        return None

    async def lookup(self, credential: str) -> Principal | None:
        """Check the credential against the database, and cache it if valid."""
        generation = self._generation
        digest = accounts.key_digest(credential)
        if accounts.looks_like_api_key(credential):
            found = await self._lookup_key(digest)
        else:
            found = await self._lookup_session(credential)
        if found is None:
            return None
        principal_, expires_at = found
        if generation == self._generation:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = _Cached(principal_, time.monotonic() + self.cache_ttl_s,
                                          expires_at)
        return principal_

    async def revoked(self, user_id: str) -> None:
        """Call after committing a revocation for `user_id`: every replica drops the user's
        cached credentials (this one before returning, the others when the notice lands)."""
        self.forget(user_id.encode())
        await self.redis.publish(self.revocation_channel, user_id)

    def forget(self, user_id: bytes | None) -> None:
        """A revocation notice (the hub's handler): drop one user's cached credentials, or
        everything when `user_id` is None (the pub/sub connection dropped) or empty."""
        self._generation += 1
        who = user_id.decode(errors="replace") if user_id else None
        if who is None:
            self._cache.clear()
            return
        for digest in [d for d, entry in self._cache.items() if entry.principal.id == who]:
            del self._cache[digest]

    async def _lookup_key(self, digest: str) -> tuple[Principal, float | None] | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(keys_db.usable_by_hash(digest))).first()
            if row is None:
                return None
            if row.is_active:
                await conn.execute(keys_db.touch(str(row.id), _TOUCH_INTERVAL_S))
        # A disabled owner's key is cached too (as inactive): re-enabling the account
        # publishes a revocation notice like any change to the user, which drops it.
        found = Principal(id=str(row.user_id), role=row.role, key_id=str(row.id),
                          scopes=tuple(row.scopes or ()), tier=row.tier,
                          active=bool(row.is_active))
        return found, (row.expires_at.timestamp() if row.expires_at else None)

    async def _lookup_session(self, token: str) -> tuple[Principal, float | None] | None:
        try:
            claims = accounts.decode_token(token, self.secret_key)
        except accounts.InvalidToken:
            return None
        jti, user_id = str(claims["jti"]), str(claims["sub"])
        if not is_uuid(user_id):
            return None
        # Login never issues a token longer-lived than the session TTL: a later `exp` means
        # the token was not made by us, even if its signature checks out.
        expires_in_s = float(claims["exp"]) - time.time()  # type: ignore[arg-type]
        if expires_in_s > self.session_ttl_s + _CLOCK_SKEW_S:
            return None
        async with self.autocommit.connect() as conn:
            row = (await conn.execute(sessions_db.usable(jti, user_id))).first()
        if row is None:
            return None
        found = Principal(id=str(row.id), role=row.role, tier=row.tier, session_id=jti)
        return found, row.expires_at.timestamp()


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def is_user(who: Principal) -> bool:
    """False for the bootstrap admin key, which has no user row and owns no keys."""
    return who.key_id != BOOTSTRAP_KEY_ID


_DENIED: dict[Permission, str] = {
    READ: "This route is for administrators, operators and viewers.",
    ACT_JOBS: "Acting on jobs and queues is for administrators and operators.",
    ADMIN: "This route is for administrators.",
}


def require_permission(conn: HTTPConnection, permission: Permission) -> Principal:
    """The caller, if their role grants `permission` (schemas/accounts.py
    ROLE_PERMISSIONS); otherwise PermissionDenied (403)."""
    who = principal(conn)
    if not who.can(permission):
        raise PermissionDenied(_DENIED[permission], details={"role": who.role,
                                                             "required": permission})
    return who


def require_admin(conn: HTTPConnection) -> Principal:
    """The caller, if an admin (users, models, deployments, settings)."""
    return require_permission(conn, ADMIN)


def require_read(conn: HTTPConnection) -> Principal:
    """The caller, if an admin, operator or viewer: the admin routes that only read."""
    return require_permission(conn, READ)


def require_act_jobs(conn: HTTPConnection) -> Principal:
    """The caller, if an admin or operator: retry, cancel, bulk, pause, resume, purge."""
    return require_permission(conn, ACT_JOBS)


def authenticator(conn: HTTPConnection) -> Authenticator:
    return conn.app.state.services.auth  # type: ignore[no-any-return]


def as_dict(who: Principal) -> dict[str, Any]:
    """How the caller is authenticated, without any secret."""
    via = ("bootstrap" if not is_user(who) else "api_key" if who.key_id else "session")
    return {"via": via, "key_id": who.key_id if is_user(who) else None,
            "scopes": list(who.scopes)}


async def insert_user(conn: AsyncConnection, stmt: Insert) -> Row[Any]:
    """Run a user INSERT; a taken email becomes EmailTaken (409), not a 500."""
    try:
        return (await conn.execute(stmt)).one()
    except IntegrityError:
        raise EmailTaken("An account with this email already exists.") from None


def build_authenticator(settings: Settings, engine: AsyncEngine, redis: Redis,
                        keys: Keys) -> Authenticator:
    """The app's Authenticator, from settings (called once, in the lifespan)."""
    secret = settings.switchyard_secret_key
    bootstrap = settings.switchyard_admin_key
    return Authenticator(
        engine, redis, keys,
        secret_key=accounts.secret_key_or_dev(secret.get_secret_value() if secret else None),
        bootstrap_key=bootstrap.get_secret_value() if bootstrap else None,
        bootstrap_tier=settings.bootstrap_rate_limit_tier, cache_ttl_s=settings.auth_cache_ttl_s,
        session_ttl_s=settings.session_ttl_s)


async def verify_credential(credential: str, scope: Scope) -> Principal | None:
    """AuthMiddleware's verifier: the app's Authenticator, built in the lifespan.

    A credential that needs a database lookup is refused (RateLimited) without one when its
    address has presented too many invalid credentials; each invalid one counts.
    """
    services = scope["app"].state.services
    auth: Authenticator = services.auth
    found = auth.cached(credential)
    if found is not None:
        return found
    limiter = services.limiter
    address = client_address(scope)
    if limiter is not None:
        remember_auth_window(scope, await limiter.check_auth_failures(address))
    found = await auth.lookup(credential)
    if found is None and limiter is not None:
        remember_auth_window(scope, await limiter.auth_failed(address))
    return found
