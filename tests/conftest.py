"""Session-wide real services: Postgres with pgvector and Redis.

By default both run embedded, as child processes of pytest, so `make test` works on a
machine with nothing installed or running. Set TEST_DATABASE_URL (a server URL whose
user may CREATE DATABASE, e.g. postgresql://postgres@localhost:5432/postgres; the server
needs pgvector) or TEST_REDIS_URL to use an existing server instead. The fixtures are
lazy: unit tests that do not ask for them start nothing.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.devservices import (
    create_database,
    drop_database,
    run_migrations,
    start_postgres,
    start_redis,
)

PROJECT_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a Postgres server (with pgvector) where tests may create databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not durable: a throwaway cluster does not need fsync, and skipping it is much faster.
    # Not under pytest's basetemp: another pytest session on the machine rotates those
    # folders away (it keeps three), which would delete this server's data mid-run.
    with tempfile.TemporaryDirectory(prefix="sy-test-pg-") as data, \
            start_postgres(Path(data), durable=False) as postgres:
        yield postgres.url


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test run (with pgvector), dropped afterwards."""
    name = f"switchyard_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        # Skipped (returns False) until the project has an alembic.ini.
        run_migrations(url, PROJECT_DIR)
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server; isolate keys with the `namespace` fixture."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="sy-test-redis-") as data, \
            start_redis(Path(data)) as redis_server:
        yield redis_server.url


@pytest.fixture
def namespace() -> str:
    """A prefix unique to this test for Redis keys and channels (SWITCHYARD_NAMESPACE)."""
    return f"sytest-{uuid.uuid4().hex[:12]}"
