"""What every request carries: who is calling, and the process-wide services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dramatiq import Broker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from api.enqueue import Enqueuer
from api.enqueue_amqp import AmqpEnqueuer
from api.hub import Hub
from pipelines.embedders.registry import Embedders
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys
from pipelines.models import AsyncModelRegistry
from pipelines.storage import FileStore
from schemas.accounts import ROLE_PERMISSIONS, Permission
from schemas.settings import Settings

if TYPE_CHECKING:  # api.auth and api.limits import Principal from here
    from api.auth import Authenticator
    from api.limits import Limiter


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `owner_id` is what every owned row is filtered by."""

    id: str
    role: str
    key_id: str | None = None
    scopes: tuple[str, ...] = ()
    # Rate-limit tier (a key of Settings.rate_limit_tiers).
    tier: str = "default"
    # The `jti` of the session token used, so logout can revoke exactly that session.
    session_id: str | None = None
    # False for a valid key of a deactivated account: answered 403 ACCOUNT_DISABLED.
    active: bool = True

    @property
    def owner_id(self) -> str:
        return self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can(self, permission: Permission) -> bool:
        """Whether the role grants `permission` (schemas/accounts.py ROLE_PERMISSIONS)."""
        return permission in ROLE_PERMISSIONS.get(self.role, ())

    @property
    def permissions(self) -> list[Permission]:
        return sorted(ROLE_PERMISSIONS.get(self.role, ()))

    @property
    def limit_key(self) -> str:
        """Whose allowance a request spends: the API key's, or for sessions the user's (so
        logging in again does not buy a fresh allowance)."""
        return f"key:{self.key_id}" if self.key_id else f"user:{self.id}"


@dataclass(slots=True)
class Services:
    """Process-wide clients, built in the app's lifespan and torn down with it."""

    settings: Settings
    engine: AsyncEngine
    # The same pool without transactions: one round trip per statement instead of three
    # (BEGIN, statement, COMMIT/ROLLBACK). For reads and single-statement writes only.
    autocommit: AsyncEngine
    redis: Redis
    events: AsyncEventLog
    hub: Hub
    # Redis, or RabbitMQ with BROKER_URL=amqp://... (api/enqueue_amqp.py).
    broker: Broker
    enqueuer: Enqueuer | AmqpEnqueuer
    keys: Keys
    models: AsyncModelRegistry
    auth: Authenticator
    # None when RATE_LIMITS_ENABLED is false.
    limiter: Limiter | None
    # Knowledge: uploads, and query embeddings (a local model loads on the first search).
    embedders: Embedders
    file_store: FileStore


def services(conn: HTTPConnection) -> Services:
    return conn.app.state.services  # type: ignore[no-any-return]


def principal(conn: HTTPConnection) -> Principal:
    return conn.scope["state"]["principal"]  # type: ignore[no-any-return]
