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


def async_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The API's engine; one per process, created in the app's lifespan."""
    return create_async_engine(
        _with_driver(url, "asyncpg"), pool_size=pool_size, max_overflow=pool_size,
        pool_pre_ping=True,
    )


def sync_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A worker process's engine; one per process, shared by its threads."""
    return create_engine(
        sync_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )
