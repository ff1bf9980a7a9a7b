"""One dead process never stops the rest: worker processes are replaced alone, their jobs
come back at once, and `switchyard dev` restarts the servers it started."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.devservices import free_port, log_tail, spawn, stop_process, worker_command
from pipelines.keys import Keys
from tests.integration.jobclient import (
    EventLogReader,
    client,
    lorem_input,
    poll,
    submit,
    wait_status,
)
from tests.integration.processes import alive, children, environ
from workers.worker_process import EXIT_CONFIG

PROJECT_DIR = Path(__file__).resolve().parents[2]
# Dramatiq alone would requeue a dead process's messages only after this long: a recovery
# well inside it can only come from the supervisor handing them back.
SLOW_REDELIVERY = {"BROKER_HEARTBEAT_TIMEOUT_MS": "120000", "SWEEPER_STALE_AFTER_S": "600"}
RECOVERY_DEADLINE_S = 45.0


def test_a_killed_worker_process_is_replaced_alone_and_its_job_finishes_once(
    start_stack: Any, redis_url: str
) -> None:
    stack = start_stack(worker_processes=2,
                        env={**SLOW_REDELIVERY, "WORKER_CPU_PROCESSES": "0"})
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        workers = poll(lambda: _io_workers(http, stack.workers.pid, 2), timeout_s=60,
                       what="two I/O worker processes to announce themselves")
        job = submit(http, "chat", lorem_input(40, delay_ms=50))
        poll(lambda: log.types(job["id"]).count("delta") >= 3, what="the job to be mid-stream")
        victim = poll(lambda: _holder_of_chat_message(log, stack.namespace, workers),
                      what="the worker process running the job")
        survivor = next(pid for pid in workers if pid != victim)

        os.kill(victim, signal.SIGKILL)

        # The sibling keeps serving while the replacement boots.
        other = submit(http, "chat", lorem_input(3))
        assert wait_status(http, other["id"], timeout_s=30)["status"] == "succeeded"
        assert alive(survivor) and stack.workers.poll() is None
        # The killed process's job is handed back at once, not after the heartbeat timeout.
        done = wait_status(http, job["id"], timeout_s=RECOVERY_DEADLINE_S)
        assert done["status"] == "succeeded", done
        assert done["attempts"] >= 2
        assert done["result"]["usage"]["completion_tokens"] == 40
        # The terminal event is published just after the row's commit: wait for it.
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded" and seen,
                     what="the job's succeeded event")
        assert types.count("succeeded") == 1, types
        # A new process takes the dead one's place and announces itself.
        replaced = poll(lambda: _io_workers(http, stack.workers.pid, 2, exclude={victim}),
                        timeout_s=60, what="a replacement worker process")
        assert survivor in replaced and victim not in replaced


def test_a_worker_process_that_cannot_start_stops_the_supervisor_instead_of_looping(
    tmp_path: Path, redis_url: str
) -> None:
    # Production mode without real secrets: workers.broker refuses to import.
    env = {key: value for key, value in os.environ.items()
           if key not in ("SWITCHYARD_SECRET_KEY", "WEBHOOK_SECRET")}
    env |= {"SWITCHYARD_ENV": "production", "REDIS_URL": redis_url,
            "SWITCHYARD_NAMESPACE": f"sycfg-{uuid.uuid4().hex[:12]}"}
    log_path = tmp_path / "workers.log"
    supervisor = spawn(worker_command(2, 1), log_path=log_path, env=env, cwd=PROJECT_DIR)
    try:
        code = supervisor.wait(timeout=120)
    finally:
        stop_process(supervisor, signal.SIGKILL, timeout_s=5)
    assert code == EXIT_CONFIG, log_tail(log_path)
    assert "SWITCHYARD_SECRET_KEY" in log_path.read_text()


def test_switchyard_dev_restarts_a_killed_redis_and_a_dead_worker_stops_nothing_else(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    admin_key = f"sy-test-{secrets.token_urlsafe(18)}"
    env = {**os.environ, "DATABASE_URL": database_url, "SWITCHYARD_ADMIN_KEY": admin_key,
           "SWITCHYARD_NAMESPACE": f"sydev-{uuid.uuid4().hex[:12]}", "PYTHONUNBUFFERED": "1",
           "WORKER_CPU_PROCESSES": "0"}
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "dev.log"
    dev = spawn([sys.executable, "-m", "api.cli", "dev", "--port", str(port),
                 "--var-dir", str(tmp_path / "var"), "--worker-processes", "1",
                 "--worker-threads", "4", "--shutdown-timeout-s", "10"],
                log_path=log_path, env=env, cwd=PROJECT_DIR)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0,
                          headers={"Authorization": f"Bearer {admin_key}"}) as http:
            _wait_ready(http, dev, log_path)
            redis_pid = _only(dev.pid, "redis-server")
            api_pid = _only(dev.pid, "uvicorn")
            supervisor_pid = _only(dev.pid, "workers.supervise")

            os.kill(redis_pid, signal.SIGKILL)

            new_redis = poll(lambda: _maybe_only(dev.pid, "redis-server", exclude=redis_pid),
                             timeout_s=60, what="dev to start Redis again")
            _wait_ready(http, dev, log_path)
            _chat_succeeds(http)
            worker_pid = _only(supervisor_pid, "workers.worker_process")

            os.kill(worker_pid, signal.SIGKILL)

            poll(lambda: _maybe_only(supervisor_pid, "workers.worker_process",
                                     exclude=worker_pid),
                 timeout_s=60, what="the supervisor to replace the worker process")
            _chat_succeeds(http)
            assert dev.poll() is None, log_tail(log_path)
            assert {api_pid, new_redis, supervisor_pid} <= set(children(dev.pid))
            assert "redis exited with signal SIGKILL" in log_path.read_text()
    finally:
        code = stop_process(dev, signal.SIGTERM, timeout_s=60)
    assert code == 0, log_tail(log_path)


def _io_workers(http: httpx.Client, supervisor: int, count: int,
                exclude: set[int] | None = None) -> set[int] | None:
    """The supervisor's live I/O worker processes, once `count` of them are announced."""
    status = http.get("/v1/system/status")
    assert status.status_code == 200, status.text
    announced = {worker["info"]["pid"] for worker in status.json()["workers"]
                 if worker["info"] and "chat" in worker["info"]["queues"]}
    live = set(children(supervisor)) - (exclude or set())
    running = announced & live
    return running if len(running) == count else None


def _holder_of_chat_message(log: EventLogReader, namespace: str,
                            workers: set[int]) -> int | None:
    """The worker process whose Dramatiq consumer holds an unacked `chat` message.

    dispatch.lua keeps a broker's fetched-but-unacked message ids in the set
    "<namespace>:__acks__.<broker id>.<queue>"; each worker process's broker id is the
    SWITCHYARD_BROKER_ID the supervisor started it with.
    """
    dramatiq_namespace = Keys(namespace).dramatiq_namespace
    holders = [pid for pid in workers
               if log.redis.scard(f"{dramatiq_namespace}:__acks__."
                                  f"{environ(pid)['SWITCHYARD_BROKER_ID']}.chat")]
    return holders[0] if len(holders) == 1 else None


def _maybe_only(parent: int, marker: str, exclude: int | None = None) -> int | None:
    pids = [pid for pid, cmdline in children(parent).items()
            if marker in cmdline and pid != exclude]
    return pids[0] if len(pids) == 1 else None


def _only(parent: int, marker: str) -> int:
    pid = _maybe_only(parent, marker)
    assert pid is not None, (marker, children(parent))
    return pid


def _wait_ready(http: httpx.Client, dev: Any, log_path: Path) -> None:
    def ready() -> bool:
        if dev.poll() is not None:
            pytest.fail(f"switchyard dev exited ({dev.returncode}):\n{log_tail(log_path)}")
        try:
            return http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(ready, timeout_s=120, interval_s=0.2, what="/ready")
    except AssertionError:
        pytest.fail(f"/ready never answered 200:\n{log_tail(log_path)}")


def _chat_succeeds(http: httpx.Client) -> None:
    job = submit(http, "chat", lorem_input(3))
    assert wait_status(http, job["id"], timeout_s=60)["status"] == "succeeded"
