"""Auth + rate-limit overhead per request: one trivial authenticated route
(`GET /v1/keys/validate`) on an API process with the limiter and one without, side by side.

Target (issue 4): the limiter adds <= 1 ms at p50 and keeps >= 80% of the unlimited rate.

`run(base_url_with_limiter, base_url_without, key)` measures two running servers (for
`make bench`). Standalone, `python -m tests.bench.auth_overhead` starts embedded Postgres
and Redis, migrates, creates a user and key, runs two uvicorns (RATE_LIMITS_ENABLED true
and false) and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PATH = "/v1/keys/validate"
# A tier no benchmark can exhaust, so every request takes the limiter's normal path.
BENCH_TIERS = {"default": {g: "100000000/minute"
                           for g in ("auth", "chat", "search", "upload", "general")}}


async def _latencies(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> list[float]:
    """Sequential requests on one connection: per-request latency without queueing."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        response = await client.get(PATH, headers=headers)
        samples.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{PATH} answered {response.status_code}: {response.text}")
    return samples


async def _rate(client: httpx.AsyncClient, headers: dict[str, str], concurrency: int,
                duration_s: float) -> float:
    """Requests per second with `concurrency` requests always in flight."""
    done = 0
    deadline = time.perf_counter() + duration_s

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(PATH, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{PATH} answered {response.status_code}")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _measure(base_urls: dict[str, str], key: str, *, requests: int, rounds: int,
                   concurrency: int, duration_s: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: dict[str, list[float]] = {name: [] for name in base_urls}
    rates: dict[str, list[float]] = {name: [] for name in base_urls}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {name: httpx.AsyncClient(base_url=url, limits=limits, timeout=30)
               for name, url in base_urls.items()}
    try:
        for client in clients.values():  # warm connections and the credential cache
            await _latencies(client, headers, 50)
        # Alternate the servers round by round, so drift on the machine hits both alike.
        for _ in range(rounds):
            for name, client in clients.items():
                latencies[name] += await _latencies(client, headers, requests // rounds)
                rates[name].append(await _rate(client, headers, concurrency,
                                               duration_s / rounds))
    finally:
        for client in clients.values():
            await client.aclose()
    result: dict[str, Any] = {}
    for name in base_urls:
        ordered = sorted(latencies[name])
        result[name] = {"p50_ms": round(statistics.median(ordered) * 1000, 3),
                        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
                        "requests_per_s": round(sum(rates[name]) / len(rates[name]), 1)}
    return result


def run(base_url_with_limiter: str, base_url_without: str, key: str, *, requests: int = 2000,
        rounds: int = 4, concurrency: int = 16, duration_s: float = 8.0) -> dict[str, Any]:
    """Measure both servers; returns p50/p99 latency, request rates and the comparison."""
    measured = asyncio.run(_measure(
        {"with_limiter": base_url_with_limiter, "without_limiter": base_url_without}, key,
        requests=requests, rounds=rounds, concurrency=concurrency, duration_s=duration_s))
    with_, without = measured["with_limiter"], measured["without_limiter"]
    added_ms = round(with_["p50_ms"] - without["p50_ms"], 3)
    rate_ratio = round(with_["requests_per_s"] / without["requests_per_s"], 3)
    return {"route": PATH, **measured, "limiter_added_p50_ms": added_ms,
            "rate_ratio": rate_ratio,
            "meets_target": added_ms <= 1.0 and rate_ratio >= 0.8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(json.dumps(standalone(args), indent=2))
    return 0


def standalone(args: argparse.Namespace) -> dict[str, Any]:
    from api.devservices import (
        create_database,
        free_port,
        run_migrations,
        spawn,
        start_postgres,
        start_redis,
        wait_or_kill,
        web_command,
    )

    project = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp, \
            start_postgres(Path(tmp) / "pg", durable=False) as postgres, \
            start_redis(Path(tmp) / "redis") as redis_server:
        database_url = create_database(postgres.url, "bench_auth")
        run_migrations(database_url, project)
        key = _make_key(database_url)
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
               "SWITCHYARD_NAMESPACE": "bench-auth", "LOG_LEVEL": "WARNING",
               "SWITCHYARD_SECRET_KEY": "bench-secret-key-0123456789abcdef0123",
               "WEBHOOK_SECRET": "bench-webhook-secret-0123456789abcdef0123",
               "RATE_LIMIT_TIERS": json.dumps(BENCH_TIERS)}
        urls, processes = {}, []
        for name, enabled in (("with", "true"), ("without", "false")):
            port = free_port()
            processes.append(spawn(web_command("127.0.0.1", port),
                                   log_path=Path(tmp) / f"{name}.log",
                                   env={**env, "RATE_LIMITS_ENABLED": enabled}, cwd=project))
            urls[name] = f"http://127.0.0.1:{port}"
        try:
            for url in urls.values():
                _wait_healthy(url)
            return run(urls["with"], urls["without"], key, requests=args.requests,
                       concurrency=args.concurrency, duration_s=args.duration_s)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                wait_or_kill(process, 10)


def _make_key(database_url: str) -> str:
    from pipelines import accounts
    from pipelines.db import api_keys as keys_db
    from pipelines.db import users as users_db
    from pipelines.db.engine import sync_engine

    engine = sync_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        user = conn.execute(users_db.insert_user(email="bench@example.com",
                                                 password_hash=None)).one()
        new = accounts.new_api_key()
        conn.execute(keys_db.insert_key(user_id=str(user.id), name="bench", prefix=new.prefix,
                                        key_hash=new.key_hash, scopes=[], expires_at=None))
    engine.dispose()
    return new.key


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never became healthy")


if __name__ == "__main__":
    sys.exit(main())
