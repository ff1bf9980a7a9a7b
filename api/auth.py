"""Who is calling: the bootstrap admin key, stored API keys (`sy-…`) or session tokens (JWTs).

Verified credentials are cached in-process for `cache_ttl_s`, keyed by their SHA-256, so a
busy key costs one Redis GET per request instead of a database query. Every revocation
(key revoked, logout, user deactivated or changed) bumps a Redis counter, the auth epoch;
a cached entry made under an older epoch is not trusted, so revocation takes effect on
every replica with the next request.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import HTTPConnection
from starlette.types import Scope

from api.context import Principal, principal
from pipelines import accounts
from pipelines.db import api_keys as keys_db
from pipelines.db import sessions as sessions_db
from pipelines.errors import EmailTaken, PermissionDenied
from pipelines.keys import Keys
from schemas.settings import Settings

log = logging.getLogger("switchyard.auth")

BOOTSTRAP_KEY_ID = "bootstrap"
BOOTSTRAP_USER_ID = "admin"
_MAX_CACHED = 10_000
# Writes to `api_keys.last_used_at` at most this often per key.
_TOUCH_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    epoch: bytes | None
    fresh_until: float  # time.monotonic()
    expires_at: float | None  # time.time() when the key or session itself expires


class Authenticator:
    """Maps a presented credential to a Principal, or None. Never logs the credential."""

    def __init__(self, engine: AsyncEngine, redis: Redis, keys: Keys, *, secret_key: str,
                 bootstrap_key: str | None, bootstrap_tier: str,
                 cache_ttl_s: float) -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.redis = redis
        self.keys = keys
        self.secret_key = secret_key
        self.bootstrap_key = bootstrap_key
        self.cache_ttl_s = cache_ttl_s
        self._bootstrap = Principal(id=BOOTSTRAP_USER_ID, role="admin", key_id=BOOTSTRAP_KEY_ID,
                                    tier=bootstrap_tier)
        self._cache: dict[str, _Cached] = {}

    async def verify(self, credential: str) -> Principal | None:
        if self.bootstrap_key is not None and accounts.same_secret(credential,
                                                                   self.bootstrap_key):
            return self._bootstrap
        digest = accounts.key_digest(credential)
        epoch = await self._epoch()
        cached = self._cache.get(digest)
        if cached is not None and self._still_good(cached, epoch):
            return cached.principal
        self._cache.pop(digest, None)
        if accounts.looks_like_api_key(credential):
            found = await self._lookup_key(digest)
        else:
            found = await self._lookup_session(credential)
        if found is None:
            return None
        principal_, expires_at = found
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        if epoch is not None:  # without Redis nobody could tell us about revocations
            self._cache[digest] = _Cached(principal_, epoch,
                                          time.monotonic() + self.cache_ttl_s, expires_at)
        return principal_

    async def revoked(self) -> None:
        """Call after committing any revocation: every replica stops trusting its cache."""
        self._cache.clear()
        await self.redis.incr(self.keys.auth_epoch())

    def _still_good(self, cached: _Cached, epoch: bytes | None) -> bool:
        return (epoch is not None and cached.epoch == epoch
                and time.monotonic() < cached.fresh_until
                and (cached.expires_at is None or time.time() < cached.expires_at))

    async def _epoch(self) -> bytes | None:
        try:
            value = await self.redis.get(self.keys.auth_epoch())
        except RedisError:
            log.warning("auth epoch unavailable; verifying against the database")
            return None
        if not value:
            return b"0"
        return value.encode() if isinstance(value, str) else value

    async def _lookup_key(self, digest: str) -> tuple[Principal, float | None] | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(keys_db.usable_by_hash(digest))).first()
            if row is None:
                return None
            await conn.execute(keys_db.touch(str(row.id), _TOUCH_INTERVAL_S))
        found = Principal(id=str(row.user_id), role=row.role, key_id=str(row.id),
                          scopes=tuple(row.scopes or ()), tier=row.tier)
        return found, (row.expires_at.timestamp() if row.expires_at else None)

    async def _lookup_session(self, token: str) -> tuple[Principal, float | None] | None:
        try:
            claims = accounts.decode_token(token, self.secret_key)
        except accounts.InvalidToken:
            return None
        jti, user_id = str(claims["jti"]), str(claims["sub"])
        if not is_uuid(user_id):
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


def require_admin(conn: HTTPConnection) -> Principal:
    """The caller, if an admin; otherwise PermissionDenied (403)."""
    who = principal(conn)
    if not who.is_admin:
        raise PermissionDenied("This route is for administrators.")
    return who


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
        bootstrap_tier=settings.bootstrap_rate_limit_tier, cache_ttl_s=settings.auth_cache_ttl_s)


async def verify_credential(credential: str, scope: Scope) -> Principal | None:
    """AuthMiddleware's verifier: the app's Authenticator, built in the lifespan."""
    auth: Authenticator = scope["app"].state.services.auth
    return await auth.verify(credential)
