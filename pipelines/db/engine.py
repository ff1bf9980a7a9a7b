"""Engines for the two worlds: async (API, asyncpg) and sync (workers, Alembic; psycopg)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _with_driver(url: str, driver: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    return _with_driver(url, "psycopg")


# A fixed-size pool with no overflow: overflow connections are closed as soon as they are
# returned, and under sustained load that churn (TLS negotiation, auth, asyncpg's type
# introspection per new connection) cost more than waiting for a pooled connection.
# No pre-ping either: it doubles the round trips of every checkout; a connection broken by
# a database restart fails one statement and SQLAlchemy then invalidates the whole pool.


def async_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """The API's engine; one per process, created in the app's lifespan."""
    return create_async_engine(
        _with_driver(url, "asyncpg"), pool_size=pool_size, max_overflow=0, pool_timeout=30,
        pool_recycle=1800,
    )


def sync_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A worker process's engine; one per process, shared by its threads."""
    return create_engine(
        sync_url(url), pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_recycle=1800
    )
