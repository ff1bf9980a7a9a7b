"""The shared parts restarting under load, with counts: jobs submitted = jobs ended, once.

- Redis restarted with its data lost while jobs are queued and running: the broker's
  messages, the event streams and the sweeper's lock are gone. Every job still ends,
  through the sweeper (which re-sends a job with no message left) and redelivery.
- Postgres restarted mid-load: requests in that window are 503 with Retry-After (never a
  500), the workers retry, and every job the API accepted ends once it is back.

Each test runs its own Redis or Postgres server, so it can stop and restart it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from api.devservices import create_database, run_migrations, start_postgres, start_redis
from tests.integration.conftest import PROJECT_DIR, StartStack
from tests.integration.jobclient import EventLogReader, client, lorem_input, poll, submit

TERMINAL = ("succeeded", "failed", "cancelled")
RECOVERY = {"SWEEPER_INTERVAL_S": "0.5", "SWEEPER_STALE_AFTER_S": "3",
            # A dead consumer's messages come back after 2 s.
            "BROKER_HEARTBEAT_TIMEOUT_MS": "2000", "BROKER_MAINTENANCE_CHANCE": "1000000"}


def _statuses(http: httpx.Client, job_ids: list[str]) -> dict[str, str]:
    return {job_id: http.get(f"/v1/jobs/{job_id}").json().get("status", "unknown")
            for job_id in job_ids}


def _wait_all_ended(http: httpx.Client, job_ids: list[str], timeout_s: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        jobs = {}
        for job_id in job_ids:
            response = http.get(f"/v1/jobs/{job_id}")
            if response.status_code != 200:  # a pooled connection the restart broke: 503
                assert response.status_code == 503, response.text
                return None
            jobs[job_id] = response.json()
        return jobs if all(job["status"] in TERMINAL for job in jobs.values()) else None

    return poll(ended, timeout_s, interval_s=0.5, what=f"{len(job_ids)} jobs to end")


def test_redis_restarted_with_its_data_lost_every_queued_and_running_job_still_ends_once(
    start_stack: StartStack, tmp_path: Path,
) -> None:
    redis_dir = tmp_path / "redis"
    redis_server = start_redis(redis_dir)
    try:
        stack = start_stack(worker_threads=4, env={**RECOVERY, "REDIS_URL": redis_server.url})
        with client(stack) as http:
            jobs = [submit(http, "chat", lorem_input(20, delay_ms=50))["id"] for _ in range(12)]
            poll(lambda: "running" in _statuses(http, jobs).values(), timeout_s=60,
                 what="a job to be running")
            before = Counter(_statuses(http, jobs).values())

            redis_server.stop()  # not durable: messages, streams and locks are gone
            redis_server = start_redis(redis_dir, port=redis_server.port)

            ended = _wait_all_ended(http, jobs, timeout_s=180)
        counts = Counter(job["status"] for job in ended.values())
        print(f"redis restart: submitted={len(jobs)} at restart={dict(before)} "
              f"ended={dict(counts)}")
        assert counts == {"succeeded": len(jobs)}, counts
        assert all(job["result"]["usage"]["completion_tokens"] == 20 for job in ended.values())
        with EventLogReader(redis_server.url, stack.namespace) as log:
            for job_id in jobs:
                # Streams written before the restart are lost; what is there since ends once.
                types = log.types(job_id)
                assert types.count("succeeded") <= 1, types
                if types:
                    assert types[-1] == "succeeded", types
    finally:
        redis_server.stop()


def test_postgres_restarted_mid_load_answers_503_with_retry_after_and_loses_no_job(
    start_stack: StartStack, tmp_path: Path,
) -> None:
    pg_dir = tmp_path / "pg"
    # Durable, as in production: a commit the API answered 202 for survives the restart.
    postgres = start_postgres(pg_dir)
    try:
        database_url = create_database(postgres.url, "restart")
        run_migrations(database_url, PROJECT_DIR)
        stack = start_stack(env={**RECOVERY, "DATABASE_URL": database_url})
        accepted: list[str] = []
        refused: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def load() -> None:
            with client(stack) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        response = http.post("/v1/jobs", json={"kind": "noop",
                                                               "input": {"n": n}})
                    except httpx.TransportError as exc:
                        refused.append((0, repr(exc)))
                        continue
                    if response.status_code == 202:
                        accepted.append(response.json()["id"])
                    else:
                        refused.append((response.status_code,
                                        response.headers.get("retry-after")))
                    time.sleep(0.02)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        poll(lambda: len(accepted) >= 20, timeout_s=60, what="jobs accepted before the restart")
        postgres.stop()
        poll(lambda: len(refused) >= 5, timeout_s=60, what="requests refused while down")
        postgres = start_postgres(pg_dir, port=postgres.port)
        after_restart = len(accepted)
        poll(lambda: len(accepted) >= after_restart + 20, timeout_s=120,
             what="jobs accepted again after the restart")
        stop.set()
        loader.join(timeout=60)

        with client(stack) as http:
            ended = _wait_all_ended(http, accepted, timeout_s=180)
        counts = Counter(job["status"] for job in ended.values())
        refusals = Counter(status for status, _ in refused)
        print(f"postgres restart: accepted={len(accepted)} refused={dict(refusals)} "
              f"ended={dict(counts)}")
        assert counts == {"succeeded": len(accepted)}, counts
        assert set(refusals) == {503}, refused
        assert all(retry_after is not None and int(retry_after) >= 1
                   for _, retry_after in refused), refused
        assert len(set(accepted)) == len(accepted)
    finally:
        postgres.stop()
