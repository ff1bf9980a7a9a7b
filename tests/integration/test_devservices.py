from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from api.devservices import create_database, drop_database, start_redis


@pytest.fixture
def scratch_database_url(pg_admin_url: str) -> Iterator[str]:
    name = f"sy_scratch_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    yield url
    drop_database(pg_admin_url, name)


def test_created_database_orders_vectors_by_cosine_distance(scratch_database_url: str) -> None:
    with psycopg.connect(scratch_database_url) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        rows = conn.execute(
            "SELECT id FROM items ORDER BY embedding <=> '[1,0.05,0]' LIMIT 2"
        ).fetchall()
    assert [row[0] for row in rows] == [1, 3]


def test_session_database_has_the_vector_extension(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None


def test_redis_answers_and_keeps_namespaced_keys(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set(f"{namespace}:probe", "1", ex=60)
        assert client.get(f"{namespace}:probe") == b"1"
    finally:
        client.close()


def test_stopping_a_service_ends_its_process(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        assert server.process.poll() is None
    assert server.process.poll() is not None
