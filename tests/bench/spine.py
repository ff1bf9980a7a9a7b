"""Spine benchmarks: queue hop, job throughput vs bare Dramatiq, streaming, chat rate."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from api.devservices import spawn, stop_process
from tests.bench.stack import PROJECT_DIR, BenchStack


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _sse_events(client: httpx.AsyncClient, method: str, url: str,
                      **kw: Any) -> Any:
    async with client.stream(method, url, **kw) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                yield line[6:]
            elif line.startswith("event: "):
                yield line


async def queue_hop(stack: BenchStack, clients: int, per_client: int) -> dict[str, Any]:
    """POST /v1/jobs → the job's first worker event (`started`) read from its SSE stream."""
    samples: list[float] = []
    # Idle connections are dropped before the API's own keep-alive timeout (5 s) closes
    # them, or a request sent just as the server closes one fails with "Server
    # disconnected" (it did at 200 clients, where requests wait seconds in the queue).
    limits = httpx.Limits(max_connections=clients * 2 + 10, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.headers,
                                 limits=limits, timeout=60) as client:
        async def one() -> None:
            for _ in range(per_client):
                t0 = time.perf_counter()
                job = (await client.post("/v1/jobs", json={"kind": "noop", "input": {}})).json()
                async for line in _sse_events(client, "GET", f"/v1/jobs/{job['id']}/events"):
                    if line == "event: started":
                        samples.append((time.perf_counter() - t0) * 1000)
                        break

        await one()  # warm-up: connections, prepared statements
        samples.clear()
        await asyncio.gather(*(one() for _ in range(clients)))
    return {"bench": "queue hop (POST → started via SSE)", "clients": clients,
            "n": len(samples), "p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99)}


def _wait(predicate: Any, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(0.02)
    return time.perf_counter()


def job_throughput(stack: BenchStack, jobs: int, processes: int, threads: int,
                   log_dir: Path) -> dict[str, Any]:
    """No-op jobs through Switchyard's lifecycle vs a bare Dramatiq actor, same Redis."""
    env = stack.env
    db = env["DATABASE_URL"]
    r = redis.Redis.from_url(env["REDIS_URL"])
    ns = env["SWITCHYARD_NAMESPACE"]
    # Switchyard: rows inserted, then messages sent the way the API sends them.
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO jobs (id, kind, owner_id, input) VALUES (%s, 'noop', "
                            "'bench', '{}')", [(i,) for i in ids])
    ours = RedisBroker(url=env["REDIS_URL"], namespace=f"{ns}:dq", middleware=[])
    t0 = time.perf_counter()
    for job_id in ids:
        ours.enqueue(Message(queue_name="default", actor_name="run_noop", args=(job_id,),
                             kwargs={}, options={}))
        r.lpush(f"{ns}:wake:default", b"1")

    def ours_done() -> bool:
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE owner_id = 'bench' AND "
                               "status = 'succeeded'").fetchone()
        return bool(row and row[0] >= jobs)

    ours_s = _wait(ours_done, 300) - t0
    # Bare Dramatiq: same Redis, same process and thread counts.
    bare_ns = f"bare-{uuid.uuid4().hex[:6]}"
    bare_env = {**os.environ, "REDIS_URL": env["REDIS_URL"], "BARE_NAMESPACE": bare_ns}
    bare = spawn([sys.executable, "-m", "dramatiq", "tests.bench.bare_actor", "--processes",
                  str(processes), "--threads", str(threads)], log_path=log_dir / "bare.log",
                 env=bare_env, cwd=PROJECT_DIR)
    try:
        time.sleep(3)  # let its processes boot before the clock starts, as ours had
        bare_broker = RedisBroker(url=env["REDIS_URL"], namespace=bare_ns, middleware=[])
        t0 = time.perf_counter()
        for i in range(jobs):
            bare_broker.enqueue(Message(queue_name="default", actor_name="bare_noop",
                                        args=(str(i),), kwargs={}, options={}))
        msgs = f"{bare_ns}:default.msgs"
        bare_s = _wait(lambda: r.hlen(msgs) == 0, 300) - t0
    finally:
        stop_process(bare)
    return {"bench": "no-op job throughput", "jobs": jobs, "processes": processes,
            "switchyard_jobs_s": jobs / ours_s, "bare_dramatiq_jobs_s": jobs / bare_s,
            "ratio": (jobs / ours_s) / (jobs / bare_s)}


async def lorem_stream(stack: BenchStack, streams: int, tokens: int) -> dict[str, Any]:
    """`dev/lorem` streamed to SSE clients: tokens delivered per second, all clients together."""
    limits = httpx.Limits(max_connections=streams + 10, keepalive_expiry=2.0)
    body = {"model": "dev/lorem", "max_tokens": tokens, "stream": True,
            "messages": [{"role": "user", "content": "go"}]}
    delivered = 0
    rss_peak = 0.0
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.headers,
                                 limits=limits, timeout=300) as client:
        async def one() -> int:
            count = 0
            async for data in _sse_events(client, "POST", "/v1/chat/completions", json=body):
                if data.startswith("{"):
                    chunk = orjson.loads(data)
                    for choice in chunk["choices"]:
                        content = choice["delta"].get("content")
                        if content:
                            count += len(content.split())
            return count

        async def watch_rss() -> None:
            nonlocal rss_peak
            while True:
                rss_peak = max(rss_peak, rss_mb(stack.web_pid()))
                await asyncio.sleep(0.1)

        await one()
        watcher = asyncio.create_task(watch_rss())
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - t0
        watcher.cancel()
        delivered = sum(counts)
    return {"bench": "dev/lorem streaming", "streams": streams, "tokens": delivered,
            "tokens_s": delivered / elapsed, "complete": delivered == streams * tokens,
            "api_rss_mb": rss_peak}


async def chat_rate(stack: BenchStack, clients: int, requests: int) -> dict[str, Any]:
    """Non-streaming `dev/echo` completions per second."""
    limits = httpx.Limits(max_connections=clients + 10, keepalive_expiry=2.0)
    body = {"model": "dev/echo", "messages": [{"role": "user", "content": "hello bench"}]}
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.headers,
                                 limits=limits, timeout=120) as client:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    errors += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        await client.post("/v1/chat/completions", json=body)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"bench": "dev/echo chat completions", "clients": clients, "requests": requests,
            "errors": errors, "req_s": requests / elapsed, "p50_ms": pct(latencies, 50),
            "p99_ms": pct(latencies, 99), "mean_ms": statistics.fmean(latencies)}
