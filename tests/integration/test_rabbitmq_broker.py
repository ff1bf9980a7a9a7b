"""RabbitMQ as Dramatiq's broker (BROKER_URL=amqp://...), against the real server on
127.0.0.1:5672: jobs of every queue group run through it while events, cancel flags and
presence stay on Redis; a worker killed mid-job has its message redelivered by RabbitMQ; the
sweeper re-sends a job whose message RabbitMQ lost; /ready and the admin status see it.

Each run gets a virtual host of its own (rabbitmqctl) so that its queues are its own.
Skipped, saying why, where nothing listens on 5672.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pika
import pytest

from pipelines.keys import Keys
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import (
    EventLogReader,
    client,
    lorem_input,
    poll,
    submit,
    wait_status,
)
from tests.integration.knowledge_files import create_base, upload, wait_document

RABBITMQ = ("127.0.0.1", 5672)


def _listening() -> bool:
    try:
        with socket.create_connection(RABBITMQ, timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _listening(),
    reason="RabbitMQ is not listening on 127.0.0.1:5672: the BROKER_URL=amqp:// tests need "
           "a real server (the python-svc machines run one; install rabbitmq-server)")


def _rabbitmqctl(*args: str) -> bool:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return False
    done = subprocess.run([ctl, *args], capture_output=True, timeout=60)
    return done.returncode == 0


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A fresh virtual host for this module, or the default one where rabbitmqctl is not
    usable (then queues are shared with anything else on the server)."""
    vhost = f"sy-test-{uuid.uuid4().hex[:10]}"
    if _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl(
            "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
        _rabbitmqctl("delete_vhost", vhost)
    else:
        yield "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="module")
def rabbit_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                 redis_url: str, amqp_url: str) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("rabbit"), database_url, redis_url,
                         env={"BROKER_URL": amqp_url, "EMBEDDING_PROVIDER": "hash",
                              "SWEEPER_INTERVAL_S": "0.5", "SWEEPER_STALE_AFTER_S": "15",
                              "QUEUE_METRICS_INTERVAL_S": "0.5"})
    yield stack
    stack.stop()


@pytest.fixture
def rstack(rabbit_stack: Stack) -> Stack:
    if not rabbit_stack.workers_running():
        rabbit_stack.start_workers()
    return rabbit_stack


def _queue_exists(amqp_url: str, queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def test_jobs_run_through_rabbitmq_while_events_stay_on_redis_each_ending_once(
    rstack: Stack, redis_url: str, amqp_url: str,
) -> None:
    with client(rstack) as http, EventLogReader(redis_url, rstack.namespace) as log:
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["broker"] is True
        jobs = [submit(http, "noop", {"n": i}) for i in range(20)]
        jobs += [submit(http, "chat", lorem_input(12)) for _ in range(5)]
        base = create_base(http, name="rabbit")
        response = upload(http, base["id"], "note.md", b"# Rabbit\n\nCarrots at dawn.\n",
                          "text/markdown")
        assert response.status_code == 202, response.text
        document = wait_document(http, response.json()["document"]["id"])
        assert document["status"] == "processed", document
        ended = [wait_status(http, job["id"], timeout_s=60) for job in jobs]
        assert [job["status"] for job in ended] == ["succeeded"] * len(jobs)
        for job in jobs:
            types = poll(lambda j=job: (seen := log.types(j["id"])) and seen[-1] == "succeeded"
                         and seen, what="the succeeded event")
            assert types.count("succeeded") == 1, types
            # Any second start is announced as a retry first (never two attempts spliced).
            assert types.count("started") == 1 or "retry" in types, types
        # The messages went through RabbitMQ: its queues exist, Dramatiq's Redis ones don't.
        assert _queue_exists(amqp_url, "chat") and _queue_exists(amqp_url, "ingest")
        keys = Keys(rstack.namespace)
        assert log.redis.exists(keys.dramatiq_messages("chat"),
                                keys.dramatiq_messages("default")) == 0
        status = http.get("/v1/system/status").json()
        assert {q["name"] for q in status["queues"]} >= {"chat", "ingest", "default"}
        assert all(q["queued"] >= 0 for q in status["queues"])


def test_a_worker_killed_mid_job_has_its_message_redelivered_by_rabbitmq_once(
    rstack: Stack, redis_url: str,
) -> None:
    with client(rstack) as http, EventLogReader(redis_url, rstack.namespace) as log:
        job = submit(http, "chat", lorem_input(30, delay_ms=40))
        poll(lambda: log.types(job["id"]).count("delta") >= 3, timeout_s=30,
             what="the job to be mid-stream")
        rstack.kill_workers(signal.SIGKILL)
        rstack.start_workers()
        done = wait_status(http, job["id"], timeout_s=60)
        assert done["status"] == "succeeded", done
        assert done["attempts"] >= 2
        assert done["result"]["usage"]["completion_tokens"] == 30
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded"
                     and seen, what="the succeeded event")
        assert types.count("succeeded") == 1
        second_start = [i for i, t in enumerate(types) if t == "started"][1]
        assert "retry" in types[:second_start], types


def test_the_sweeper_resends_a_job_whose_message_rabbitmq_lost(
    rstack: Stack, redis_url: str, amqp_url: str,
) -> None:
    with client(rstack) as http, EventLogReader(redis_url, rstack.namespace) as log:
        rstack.kill_workers(signal.SIGTERM)
        job = submit(http, "noop", {"lost": True})
        # The queue gauges read RabbitMQ's counts (Dramatiq's Redis queues are empty).
        poll(lambda: 'switchyard_queue_depth{queue="default"} 1.0' in http.get("/metrics").text,
             timeout_s=30, what="the default queue's depth gauge to read 1")
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            purged = connection.channel().queue_purge("default")
        finally:
            connection.close()
        assert purged.method.message_count == 1
        rstack.start_workers()
        done = wait_status(http, job["id"], timeout_s=90)
        assert done["status"] == "succeeded" and done["result"] == {"echo": {"lost": True}}
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded"
                     and seen, what="the succeeded event")
        assert types.count("succeeded") == 1
