"""Nothing is lost: a worker killed mid-job, messages lost from Redis, a graceful shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import psycopg

from pipelines.keys import Keys
from schemas.jobs import JOB_ROUTES
from tests.integration.jobclient import (
    EventLogReader,
    client,
    lorem_input,
    poll,
    submit,
    wait_status,
)

# Dead workers' messages are requeued after 2 s, checked on every broker command.
FAST_REDELIVERY = {"BROKER_HEARTBEAT_TIMEOUT_MS": "2000", "BROKER_MAINTENANCE_CHANCE": "1000000"}


def test_the_broker_timing_settings_reach_dramatiqs_redis_broker() -> None:
    script = ("from workers.broker import broker; "
              "print(broker.heartbeat_timeout, broker.maintenance_chance)")
    # Development mode: the broker module refuses the public default secrets otherwise.
    env = {**os.environ, **FAST_REDELIVERY, "REDIS_URL": "redis://127.0.0.1:1/0",
           "SWITCHYARD_ENV": "development"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout.split() == ["2000", "1000000"]


def test_a_job_whose_worker_is_killed_mid_job_still_succeeds_exactly_once(
    start_stack: Any, redis_url: str
) -> None:
    stack = start_stack(env=FAST_REDELIVERY)
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        job = submit(http, "chat", lorem_input(30, delay_ms=40))
        poll(lambda: log.types(job["id"]).count("delta") >= 3, what="the job to be mid-stream")

        stack.kill_workers(signal.SIGKILL)
        stack.start_workers()

        done = wait_status(http, job["id"], timeout_s=30)
        assert done["status"] == "succeeded", done
        assert done["attempts"] >= 2
        assert done["result"]["usage"]["completion_tokens"] == 30
        types = log.types(job["id"])
        assert types.count("succeeded") == 1 and types[-1] == "succeeded"
        second_start = [i for i, t in enumerate(types) if t == "started"][1]
        assert "retry" in types[:second_start], types
        assert [e.seq for e in log.events(job["id"])] == list(range(1, len(types) + 1))


def test_the_sweeper_resends_a_job_whose_message_redis_lost(
    start_stack: Any, redis_url: str
) -> None:
    stack = start_stack(env={"SWEEPER_INTERVAL_S": "0.5", "SWEEPER_STALE_AFTER_S": "1"})
    keys = Keys(stack.namespace)
    queue = JOB_ROUTES["noop"].queue_name
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        stack.kill_workers(signal.SIGTERM)
        job = submit(http, "noop", {"lost": True})
        assert log.redis.hlen(keys.dramatiq_messages(queue)) == 1
        deleted = log.redis.delete(keys.dramatiq_queue(queue), keys.dramatiq_messages(queue))
        assert deleted == 2

        stack.start_workers()

        done = wait_status(http, job["id"], timeout_s=15)
        assert done["status"] == "succeeded" and done["result"] == {"echo": {"lost": True}}
        # The terminal event is published just after the row's commit: wait for it.
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded" and seen,
                     what="the job's succeeded event")
        assert types.count("succeeded") == 1
        # The run's database is shared: jobs other tests left queued may be swept with it.
        assert re.search(r"sweeper re-sent \d+ lost jobs", stack.workers_log.read_text())


def test_sigterm_lets_a_running_job_finish_or_be_requeued_never_lost(
    start_stack: Any, redis_url: str
) -> None:
    stack = start_stack(env=FAST_REDELIVERY)
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        job = submit(http, "chat", lorem_input(15, delay_ms=40))
        poll(lambda: "delta" in log.types(job["id"]), what="the job to be running")

        code = stack.kill_workers(signal.SIGTERM)
        assert code == 0, stack.logs()
        stack.start_workers()

        done = wait_status(http, job["id"], timeout_s=20)
        assert done["status"] == "succeeded", done
        assert done["result"]["usage"]["completion_tokens"] == 15
        # The terminal event is published just after the row's commit: wait for it.
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded" and seen,
                     what="the job's succeeded event")
        assert types.count("succeeded") == 1


def test_a_redelivered_child_publishes_the_terminal_event_its_parent_lost(
    start_stack: Any, redis_url: str, database_url: str
) -> None:
    # A chain run is ended by its last step's transaction; if that worker dies between the
    # commit and the publish, only the step's message comes back. Simulated here: the
    # parent's terminal event is removed, and a finished child's message is delivered again.
    stack = start_stack()
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log, \
            psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"),
                            autocommit=True) as db:
        parent = submit(http, "noop", {"parent": True})
        wait_status(http, parent["id"], timeout_s=15)
        poll(lambda: log.types(parent["id"])[-1:] == ["succeeded"],
             what="the parent's succeeded event")
        last_id = log.redis.xrevrange(log.keys.events(parent["id"]), count=1)[0][0]
        assert log.redis.xdel(log.keys.events(parent["id"]), last_id) == 1

        stack.kill_workers(signal.SIGTERM)
        child = submit(http, "noop", {"child": True})
        db.execute("UPDATE jobs SET parent_id = %s, status = 'succeeded', result = '{}', "
                   "finished_at = now() WHERE id = %s", (parent["id"], child["id"]))
        stack.start_workers()

        types = poll(lambda: (seen := log.types(parent["id"])) and seen[-1] == "succeeded"
                     and seen, what="the parent's succeeded event published again")
        assert types.count("succeeded") == 1
