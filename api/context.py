"""What every request carries: who is calling, and the process-wide services."""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq.brokers.redis import RedisBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from api.enqueue import Enqueuer
from api.hub import Hub
from pipelines.events import AsyncEventLog
from pipelines.keys import Keys
from schemas.settings import Settings


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `owner_id` is what every owned row is filtered by."""

    id: str
    role: str
    key_id: str | None = None

    @property
    def owner_id(self) -> str:
        return self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(slots=True)
class Services:
    """Process-wide clients, built in the app's lifespan and torn down with it."""

    settings: Settings
    engine: AsyncEngine
    redis: Redis
    events: AsyncEventLog
    hub: Hub
    broker: RedisBroker
    enqueuer: Enqueuer
    keys: Keys


def services(conn: HTTPConnection) -> Services:
    return conn.app.state.services  # type: ignore[no-any-return]


def principal(conn: HTTPConnection) -> Principal:
    return conn.scope["state"]["principal"]  # type: ignore[no-any-return]
