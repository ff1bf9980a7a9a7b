"""Workers on other "hosts" (network namespaces with their own empty working directory and
/tmp, reaching Postgres and Redis over a veth link): nothing relies on a shared disk.

- a file uploaded through the API (on this host) is ingested by a worker on host B;
- a chat streamed from the API while its worker runs on host C;
- every process of host B killed mid-job: the job finishes on host C, exactly once;
- API replica A (on host A) killed mid-stream: the client resumes on replica B with
  Last-Event-ID and receives every remaining event once.

Selected with `-m multihost`; skipped, saying why, where `ip netns` is refused.
"""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from api.devservices import web_command
from tests.integration.conftest import Stack, StartStack
from tests.integration.hosts import NetHost, worker_args
from tests.integration.jobclient import (
    EventLogReader,
    SseEvent,
    assert_contiguous,
    client,
    lorem_input,
    poll,
    sse_events,
    submit,
    wait_status,
)
from tests.integration.knowledge_files import create_base, upload, wait_document

pytestmark = pytest.mark.multihost

# A dead host's unacked messages go back to the queue after 2 s (its supervisor died too,
# so nobody releases them sooner).
ENV = {"EMBEDDING_PROVIDER": "hash", "BROKER_HEARTBEAT_TIMEOUT_MS": "2000",
       "BROKER_MAINTENANCE_CHANCE": "1000000"}


@pytest.fixture
def hosts() -> Iterator[list[NetHost]]:
    """Two hosts whose roots are short paths: a host's /tmp holds Unix sockets (the ingest
    sandbox's), whose paths may not exceed 107 bytes, and pytest's tmp_path (longer still
    under pytest-xdist) leaves too little of that."""
    created: list[NetHost] = []
    with tempfile.TemporaryDirectory(prefix="sy-hosts-") as root:
        try:
            for index in (1, 2):
                created.append(NetHost.create(index, Path(root) / f"h{index}"))
            yield created
        finally:
            for host in created:
                host.destroy()


def _start_worker(stack: Stack, host: NetHost, database_url: str, redis_url: str) -> None:
    """Start a worker supervisor (an I/O and a CPU process) on `host`; wait until both
    processes are consuming."""
    env = {**stack.env, "DATABASE_URL": host.reach(database_url),
           "REDIS_URL": host.reach(redis_url)}
    log_path = stack.log_dir / f"{host.name}.log"
    process = host.run(worker_args(), env, log_path)

    def ready() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        return log_path.read_text().count("worker process ready") >= 2

    poll(ready, timeout_s=180, interval_s=0.2, what=f"the worker on {host.name}")


def _api_only(start_stack: StartStack) -> Stack:
    """An API on this host whose own workers are stopped: only the hosts' workers run."""
    stack = start_stack(env=ENV)
    stack.kill_workers(signal.SIGTERM)
    return stack


def _workdir_files(host: NetHost) -> list[str]:
    return sorted(str(p.relative_to(host.root)) for p in host.workdir.rglob("*"))


def test_an_upload_through_the_api_is_ingested_by_a_worker_on_another_host(
    start_stack: StartStack, hosts: list[NetHost], database_url: str, redis_url: str,
) -> None:
    stack = _api_only(start_stack)
    host_b = hosts[0]
    _start_worker(stack, host_b, database_url, redis_url)
    with client(stack) as http:
        base = create_base(http, name="across hosts")
        response = upload(http, base["id"], "far.md",
                          b"# Far away\n\nThe ferry leaves the north pier at nine.\n",
                          "text/markdown")
        assert response.status_code == 202, response.text
        document = wait_document(http, response.json()["document"]["id"])
        assert document["status"] == "processed", document
        found = http.post("/v1/knowledge/search", json={
            "query": "ferry north pier", "knowledge_ids": [base["id"]], "mode": "keyword"})
        assert [r["document_id"] for r in found.json()["results"]] == [document["id"]]
    # The worker wrote nothing where it runs: the file came from Postgres into a temporary
    # copy in its own /tmp, removed after the ingest.
    assert _workdir_files(host_b) == []
    assert not [p for p in host_b.tmpdir.rglob("switchyard-file-*")]
    assert "worker process ready" in (stack.log_dir / f"{host_b.name}.log").read_text()


def test_a_chat_streams_from_the_api_while_its_worker_runs_on_another_host(
    start_stack: StartStack, hosts: list[NetHost], database_url: str, redis_url: str,
) -> None:
    stack = _api_only(start_stack)
    _start_worker(stack, hosts[1], database_url, redis_url)
    body = {**lorem_input(25, delay_ms=5), "stream": True}
    deltas = []
    with client(stack) as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line)
        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
            deltas.append(chunk["choices"][0]["delta"]["content"])
    assert len("".join(deltas).split()) == 25


def test_killing_every_process_of_a_host_mid_job_finishes_the_job_on_another_once(
    start_stack: StartStack, hosts: list[NetHost], database_url: str, redis_url: str,
) -> None:
    stack = _api_only(start_stack)
    host_b, host_c = hosts
    _start_worker(stack, host_b, database_url, redis_url)
    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        job = submit(http, "chat", lorem_input(30, delay_ms=60))
        poll(lambda: log.types(job["id"]).count("delta") >= 3, timeout_s=60,
             what="the job to be mid-stream on host B")
        host_b.kill_all()
        _start_worker(stack, host_c, database_url, redis_url)
        done = wait_status(http, job["id"], timeout_s=120)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["result"]["usage"]["completion_tokens"] == 30
        types = poll(lambda: (seen := log.types(job["id"])) and seen[-1] == "succeeded"
                     and seen, what="the succeeded event")
        assert types.count("succeeded") == 1
        second_start = [i for i, t in enumerate(types) if t == "started"][1]
        assert "retry" in types[:second_start], types
    with httpx.Client(base_url=stack.base_url, headers=stack.headers) as http:
        assert http.get("/ready").status_code == 200


def _start_api(stack: Stack, host: NetHost, database_url: str, redis_url: str) -> str:
    """A second API replica on `host`; returns its base URL (reached over the veth link)."""
    env = {**stack.env, "DATABASE_URL": host.reach(database_url),
           "REDIS_URL": host.reach(redis_url)}
    port = 8000
    host.run(web_command(host.ns_ip, port), env, stack.log_dir / f"{host.name}-web.log")
    base_url = f"http://{host.ns_ip}:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    poll(healthy, timeout_s=180, interval_s=0.5, what=f"the API replica on {host.name}")
    return base_url


def test_a_client_whose_api_replica_dies_mid_stream_resumes_on_another_losing_nothing(
    stack: Stack, hosts: list[NetHost], database_url: str, redis_url: str,
) -> None:
    host_a = hosts[0]
    replica_a = _start_api(stack, host_a, database_url, redis_url)
    received: list[SseEvent] = []
    with httpx.Client(base_url=replica_a, headers=stack.headers, timeout=30) as http_a, \
            EventLogReader(redis_url, stack.namespace) as log:
        job = submit(http_a, "chat", lorem_input(40, delay_ms=60))
        try:
            with connect_sse(http_a, "GET", f"/v1/jobs/{job['id']}/events") as source:
                for sse in source.iter_sse():
                    payload = sse.json()
                    received.append(SseEvent(sse.id, sse.event, payload["seq"],
                                             payload["data"]))
                    if len(received) == 5:
                        host_a.kill_all()  # replica A is gone mid-stream
        except httpx.HTTPError:
            pass
        assert 5 <= len(received) and received[-1].type != "succeeded", received
        with client(stack) as http_b:  # replica B, on this host
            rest = sse_events(http_b, job["id"], last_event_id=received[-1].id,
                              timeout_s=60)
        events = received + rest
        assert_contiguous(events)
        assert events[-1].type == "succeeded"
        truth = poll(lambda: (seen := log.events(job["id"])) and seen[-1].type == "succeeded"
                     and seen, what="the succeeded event")
        # Every event once, in order: exactly the job's event log, nothing lost or repeated.
        assert [e.id for e in events] == [e.id for e in truth]
        print(f"replica failover: {len(received)} events from A, {len(rest)} from B, "
              f"{len(truth)} in the log")
