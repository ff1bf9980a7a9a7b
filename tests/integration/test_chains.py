"""Chains end to end: real uvicorn, real dramatiq workers, real Postgres and Redis; dev models.

Positions run one after another, prompts at one position in parallel as their own jobs;
every event of a run is on the run's own log in AI Studio's names.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from pipelines.events import stream_id_key
from pipelines.keys import Keys
from tests.integration.conftest import Stack, _start_stack
from tests.integration.jobclient import EventLogReader, client, poll, wait_status
from tests.integration.knowledge_files import create_base, ingest
from tests.integration.processes import children

CHAIN_TYPES = ("execution_started", "prompt_started", "prompt_chunk", "prompt_complete",
               "execution_complete", "execution_failed")


def prompt(name: str, position: int, template: str, model: str = "dev/echo",
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "position": position, "model": model, "template": template, **extra}


def create_chain(http: httpx.Client, prompts: list[dict[str, Any]],
                 fields: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/chains", json={
        "name": "test chain", "description": "d", "prompts": prompts,
        "input_fields": fields if fields is not None else [{"name": "topic"}], **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def three_positions(http: httpx.Client, delay_ms: int = 0) -> dict[str, Any]:
    dev = {"dev_options": {"token_delay_ms": delay_ms}} if delay_ms else {}
    return create_chain(http, [
        prompt("Outline", 1, "outline of {{topic}}", **dev),
        prompt("Draft", 2, "draft from {{Outline}}", **dev),
        prompt("Polish", 3, "polish {{Draft}} about {{topic}}", **dev),
    ])


def stream_run(http: httpx.Client, path: str, body: dict[str, Any],
               stop_after: int | None = None) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
    """POST a streamed run; (run id, [(event id, type, data)]) until the stream ends."""
    frames: list[tuple[str, str, dict[str, Any]]] = []
    with connect_sse(http, "POST", path, json={**body, "stream": True},
                     timeout=httpx.Timeout(60.0)) as source:
        assert source.response.status_code == 200, source.response.read()
        run_id = source.response.headers["x-job-id"]
        for sse in source.iter_sse():
            if not sse.data:  # a keep-alive comment after an event with an id
                continue
            data = sse.json()
            assert data["type"] == sse.event
            frames.append((sse.id, sse.event, data))
            if stop_after is not None and len(frames) >= stop_after:
                break
    return run_id, frames


def collapsed(types: list[str]) -> list[str]:
    """Event types with runs of prompt_chunk folded into one."""
    out: list[str] = []
    for kind in types:
        if not (kind == "prompt_chunk" and out and out[-1] == "prompt_chunk"):
            out.append(kind)
    return out


def chunk_text(frames: list[tuple[str, str, dict[str, Any]]]) -> dict[int, str]:
    text: dict[int, str] = defaultdict(str)
    for _, kind, data in frames:
        if kind == "prompt_started":
            text[data["promptId"]] = ""  # a new attempt: drop what the last one streamed
        elif kind == "prompt_chunk":
            text[data["promptId"]] += data["content"]
    return dict(text)


def test_a_three_position_chain_streams_the_exact_event_sequence_and_records_the_run(
    http: httpx.Client,
) -> None:
    chain = three_positions(http)
    run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                {"inputs": {"topic": "rivers"}})

    types = [kind for _, kind, _ in frames]
    assert collapsed(types) == [
        "execution_started",
        "prompt_started", "prompt_chunk", "prompt_complete",
        "prompt_started", "prompt_chunk", "prompt_complete",
        "prompt_started", "prompt_chunk", "prompt_complete",
        "execution_complete",
    ]
    assert frames[0][2] == {"type": "execution_started", "executionId": run_id,
                            "totalPrompts": 3, "version": 1, "attempt": 1}
    started = [data for _, kind, data in frames if kind == "prompt_started"]
    assert [(s["promptId"], s["position"], s["name"]) for s in started] == [
        (1, 1, "Outline"), (2, 2, "Draft"), (3, 3, "Polish")]
    outputs = {data["promptId"]: data["output"] for _, kind, data in frames
               if kind == "prompt_complete"}
    assert outputs == {1: "outline of rivers", 2: "draft from outline of rivers",
                       3: "polish draft from outline of rivers about rivers"}
    assert chunk_text(frames) == outputs
    complete = next(data for _, kind, data in frames if kind == "prompt_complete")
    assert set(complete["metadata"]) >= {"model", "tokens", "duration_ms", "cost"}
    assert complete["metadata"]["model"] == "dev/echo" and complete["metadata"]["tokens"] > 0
    final = frames[-1][2]
    assert [(r["promptId"], r["output"]) for r in final["results"]] == sorted(outputs.items())
    assert all(event_id for event_id, _, _ in frames)

    job = wait_status(http, run_id)
    assert job["status"] == "succeeded" and job["kind"] == "chain"
    run = http.get(f"/v1/chains/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["version"] == 1
    assert run["inputs"] == {"topic": "rivers"}
    steps = run["steps"]
    assert [s["input"] for s in steps] == ["outline of rivers", "draft from outline of rivers",
                                           "polish draft from outline of rivers about rivers"]
    for step in steps:
        assert step["status"] == "succeeded" and step["attempts"] == 1
        assert step["output"] == outputs[step["prompt_id"]]
        assert step["tokens"]["total"] > 0 and step["duration_ms"] > 0
        child = http.get(f"/v1/jobs/{step['job_id']}").json()
        assert child["kind"] == "chain_step" and child["parent_id"] == run_id
        assert child["status"] == "succeeded"
    assert run["total_tokens"] == sum(s["tokens"]["total"] for s in steps)

    # The job's own event log shows the same run, then the job's end.
    log = [e for e in _job_events(http, run_id)]
    assert [t for t in log if t in CHAIN_TYPES] == types
    assert log[-1] == "succeeded"


def _job_events(http: httpx.Client, job_id: str) -> list[str]:
    with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events",
                     timeout=httpx.Timeout(30.0)) as source:
        return [sse.event for sse in source.iter_sse()]


def test_steps_at_one_position_run_in_parallel_and_their_chunks_interleave(
    http: httpx.Client,
) -> None:
    slow = {"model": "dev/lorem", "max_tokens": 12, "dev_options": {"token_delay_ms": 60}}
    chain = create_chain(http, [
        {**prompt("Left", 1, "left {{topic}}"), **slow},
        {**prompt("Right", 1, "right {{topic}}"), **slow},
        prompt("Join", 2, "{{Left}} | {{Right}}"),
    ])
    run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                {"inputs": {"topic": "t"}})
    assert frames[-1][1] == "execution_complete"
    chunks = [(stream_id_key(eid), data["promptId"]) for eid, kind, data in frames
              if kind == "prompt_chunk"]
    left = [at for at, pid in chunks if pid == 1]
    right = [at for at, pid in chunks if pid == 2]
    # Overlap in time: each step streamed some of its tokens while the other was streaming.
    assert left[0] < right[-1] and right[0] < left[-1]
    switches = sum(1 for a, b in zip(chunks, chunks[1:], strict=False)
                   if a[1] != b[1] and {a[1], b[1]} == {1, 2})
    assert switches >= 3, chunks
    outputs = {data["promptId"]: data["output"] for _, kind, data in frames
               if kind == "prompt_complete"}
    assert outputs[3] == f"{outputs[1]} | {outputs[2]}"
    assert len(outputs[1].split()) == 12
    assert wait_status(http, run_id)["status"] == "succeeded"


def test_saving_refuses_unknown_same_position_later_and_cyclic_references_naming_them(
    http: httpx.Client,
) -> None:
    cases = [
        ([prompt("A", 1, "{{topic}} {{ghost}}")], {"prompt": "A", "reference": "ghost"}),
        ([prompt("A", 1, "{{topic}}"), prompt("B", 1, "{{A}}")],
         {"prompt": "B", "reference": "A"}),
        ([prompt("A", 1, "{{B}}"), prompt("B", 2, "{{topic}}")],
         {"prompt": "A", "reference": "B"}),
    ]
    for prompts, details in cases:
        response = http.post("/v1/chains", json={"name": "bad", "prompts": prompts,
                                                 "input_fields": [{"name": "topic"}]})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_FAILED" and error["details"] == details
        assert f"'{details['prompt']}'" in error["message"]
        assert f"'{details['reference']}'" in error["message"]
    cyclic = http.post("/v1/chains", json={"name": "bad", "prompts": [
        prompt("A", 1, "{{B}}"), prompt("B", 2, "{{A}}")]})
    assert cyclic.status_code == 422
    assert set(cyclic.json()["error"]["details"]["cycle"]) == {"A", "B"}
    unknown_model = http.post("/v1/chains", json={"name": "bad", "prompts": [
        prompt("A", 1, "hi", model="nobody/nothing")]})
    assert unknown_model.status_code == 422
    assert unknown_model.json()["error"]["details"] == {"prompt": "A",
                                                        "model": "nobody/nothing"}


def test_limits_prompts_fields_input_bytes_and_field_count(http: httpx.Client) -> None:
    many = http.post("/v1/chains", json={"name": "big", "prompts": [
        prompt(f"P{i}", i, "x") for i in range(21)]})
    assert many.status_code == 422
    assert many.json()["error"]["details"] == {"limit": "prompts", "max": 20, "found": 21}
    wide = http.post("/v1/chains", json={"name": "wide", "prompts": [prompt("A", 1, "x")],
                                         "input_fields": [{"name": f"f{i}"} for i in range(51)]})
    assert wide.status_code == 422
    assert wide.json()["error"]["details"]["limit"] == "input_fields"

    chain = create_chain(http, [prompt("A", 1, "{{topic}}")],
                         fields=[{"name": "topic", "max_length": 200_000}])
    run = f"/v1/chains/{chain['id']}/run"
    big = http.post(run, json={"inputs": {"topic": "x" * (100 * 1024 + 1)}})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    crowded = http.post(run, json={"inputs": {f"f{i}": "v" for i in range(51)}})
    assert crowded.status_code == 422
    assert crowded.json()["error"]["details"] == {"limit": "input_fields", "max": 50,
                                                  "found": 51}
    missing = http.post(run, json={"inputs": {}})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"] == {"field": "inputs.topic"}


def test_a_step_past_its_timeout_uses_its_default_output_when_told_to_continue(
    http: httpx.Client,
) -> None:
    chain = create_chain(http, [
        prompt("Slow", 1, "{{topic}}", model="dev/lorem", max_tokens=200,
               dev_options={"token_delay_ms": 50}, timeout_s=0.5, on_error="continue",
               default_output="fallback"),
        prompt("After", 2, "{{Slow}} then"),
    ])
    run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                {"inputs": {"topic": "t"}})
    assert frames[-1][1] == "execution_complete"
    completes = [data for _, kind, data in frames if kind == "prompt_complete"]
    assert completes[0]["output"] == "fallback"
    assert completes[0]["metadata"]["error"]["code"] == "STEP_TIMEOUT"
    assert completes[1]["output"] == "fallback then"
    steps = http.get(f"/v1/chains/runs/{run_id}").json()["steps"]
    assert [s["status"] for s in steps] == ["defaulted", "succeeded"]
    assert http.get(f"/v1/jobs/{steps[0]['job_id']}").json()["status"] == "failed"


def test_versions_listing_paging_and_delete(http: httpx.Client) -> None:
    older = create_chain(http, [prompt("A", 1, "{{topic}}")], status="published")
    chain = create_chain(http, [prompt("A", 1, "v1 {{topic}}")], status="published")
    body = {"name": "renamed", "status": "published", "input_fields": [{"name": "topic"}],
            "prompts": [prompt("A", 1, "v2 {{topic}}"), prompt("B", 2, "{{A}}")]}
    updated = http.put(f"/v1/chains/{chain['id']}", json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2 and updated.json()["promptCount"] == 2
    run = http.post(f"/v1/chains/{chain['id']}/run", json={"inputs": {"topic": "x"}})
    assert run.status_code == 202, run.text
    run_id = run.json()["id"]
    assert wait_status(http, run_id)["status"] == "succeeded"
    record = http.get(f"/v1/chains/runs/{run_id}").json()
    assert record["version"] == 2 and record["results"][1]["output"] == "v2 x"

    listed = http.get("/v1/chains", params={"status": "published", "limit": 1}).json()
    assert listed["data"][0]["id"] == chain["id"] and listed["data"][0]["promptCount"] == 2
    assert listed["next_cursor"]
    page2 = http.get("/v1/chains", params={"status": "published", "limit": 100,
                                           "cursor": listed["next_cursor"]}).json()["data"]
    assert chain["id"] not in {c["id"] for c in page2} and older["id"] in {c["id"] for c in page2}
    assert all(c["status"] == "draft" for c in
               http.get("/v1/chains", params={"status": "draft"}).json()["data"])
    runs = http.get(f"/v1/chains/{chain['id']}/runs", params={"status": "succeeded"}).json()
    assert [r["id"] for r in runs["data"]] == [run_id]

    assert http.delete(f"/v1/chains/{chain['id']}").status_code == 204
    assert http.get(f"/v1/chains/{chain['id']}").status_code == 404
    assert http.get(f"/v1/chains/runs/{run_id}").status_code == 200


def test_a_run_stream_resumes_after_last_event_id_mid_run(http: httpx.Client) -> None:
    chain = create_chain(http, [
        prompt("A", 1, "{{topic}}", model="dev/lorem", max_tokens=20,
               dev_options={"token_delay_ms": 40}),
        prompt("B", 2, "{{A}} again"),
    ])
    run_id, first = stream_run(http, f"/v1/chains/{chain['id']}/run",
                               {"inputs": {"topic": "t"}}, stop_after=5)
    assert len(first) == 5
    rest: list[tuple[str, str, dict[str, Any]]] = []
    with connect_sse(http, "GET", f"/v1/chains/runs/{run_id}/events",
                     headers={"Last-Event-ID": first[-1][0]},
                     timeout=httpx.Timeout(60.0)) as source:
        assert source.response.status_code == 200
        rest += [(sse.id, sse.event, sse.json()) for sse in source.iter_sse() if sse.data]
    whole = first + rest
    assert rest and rest[-1][1] == "execution_complete"
    ids = [stream_id_key(eid) for eid, _, _ in whole]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Nothing lost, nothing twice: the same as reading the whole run from its start.
    with connect_sse(http, "GET", f"/v1/chains/runs/{run_id}/events",
                     timeout=httpx.Timeout(60.0)) as source:
        replay = [(sse.id, sse.event, sse.json()) for sse in source.iter_sse() if sse.data]
    assert replay == whole
    outputs = {data["promptId"]: data["output"] for _, kind, data in whole
               if kind == "prompt_complete"}
    assert chunk_text(whole) == outputs and outputs[2] == f"{outputs[1]} again"


@pytest.fixture(scope="module")
def chain_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
                redis_url: str) -> Iterator[Stack]:
    """A stack whose workers read the model registry on every use (so a model disabled or
    enabled by a test takes effect at once), with one I/O worker process and no CPU one."""
    stack = _start_stack(tmp_path_factory.mktemp("chains"), database_url, redis_url,
                         env={"MODEL_CACHE_TTL_S": "0", "WORKER_CPU_PROCESSES": "0"})
    yield stack
    stack.stop()


@pytest.fixture
def chain_http(chain_stack: Stack) -> Iterator[httpx.Client]:
    with client(chain_stack) as http:
        yield http


def test_a_failing_step_fails_the_run_and_resume_reruns_only_it_and_later_steps(
    chain_http: httpx.Client,
) -> None:
    http = chain_http
    model_id = f"test/{uuid.uuid4().hex[:10]}"
    made = http.post("/v1/admin/models", json={"id": model_id, "provider": "dev",
                                               "upstream_model": "echo"})
    assert made.status_code in (200, 201), made.text
    chain = create_chain(http, [
        prompt("First", 1, "one {{topic}}"),
        prompt("Side", 1, "side {{topic}}"),
        prompt("Flaky", 2, "{{First}} two", model=model_id),
        prompt("Last", 3, "{{Flaky}} three"),
    ])
    assert http.put(f"/v1/admin/models/{model_id}", json={"enabled": False}).status_code == 200
    run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                {"inputs": {"topic": "t"}})
    assert frames[-1][1] == "execution_failed"
    failure = frames[-1][2]
    assert failure["promptId"] == 3 and failure["recoverable"] is True
    assert failure["error"]["code"] == "MODEL_UNAVAILABLE"
    assert wait_status(http, run_id)["status"] == "failed"
    before = {s["name"]: s for s in http.get(f"/v1/chains/runs/{run_id}").json()["steps"]}
    assert [before[n]["status"] for n in ("First", "Side", "Flaky", "Last")] == [
        "succeeded", "succeeded", "failed", "pending"]

    assert http.put(f"/v1/admin/models/{model_id}", json={"enabled": True}).status_code == 200
    _, resumed = stream_run(http, f"/v1/chains/runs/{run_id}/resume", {})
    assert resumed[0][2]["attempt"] == 2
    assert resumed[-1][1] == "execution_complete"
    started = [data["promptId"] for _, kind, data in resumed if kind == "prompt_started"]
    assert started == [3, 4]
    assert [r["output"] for r in resumed[-1][2]["results"]] == [
        "one t", "side t", "one t two", "one t two three"]
    after = {s["name"]: s for s in http.get(f"/v1/chains/runs/{run_id}").json()["steps"]}
    for name in ("First", "Side"):  # reused: the same job, run once
        assert after[name]["job_id"] == before[name]["job_id"]
        assert after[name]["attempts"] == 1
    assert after["Flaky"]["job_id"] != before["Flaky"]["job_id"]
    assert after["Flaky"]["attempts"] == 2 and after["Flaky"]["status"] == "succeeded"
    assert wait_status(http, run_id)["status"] == "succeeded"

    # Rerun from a step with changed inputs: a new run that reuses the earlier position.
    rerun = http.post(f"/v1/chains/runs/{run_id}/rerun",
                      json={"from_prompt": "Flaky", "inputs": {"topic": "u"}})
    assert rerun.status_code == 202, rerun.text
    new_id = rerun.json()["id"]
    assert wait_status(http, new_id)["status"] == "succeeded"
    record = http.get(f"/v1/chains/runs/{new_id}").json()
    assert record["rerun_of"] == run_id and record["inputs"] == {"topic": "u"}
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["First"]["reused"] and steps["First"]["output"] == "one t"
    assert not steps["Flaky"]["reused"] and steps["Last"]["output"] == "one t two three"


def test_a_worker_killed_mid_step_still_completes_the_run_once_without_splicing(
    chain_http: httpx.Client, chain_stack: Stack, redis_url: str,
) -> None:
    http = chain_http
    chain = create_chain(http, [
        prompt("Long", 1, "{{topic}}", model="dev/lorem", max_tokens=40,
               dev_options={"token_delay_ms": 50}),
        prompt("Echo", 2, "[{{Long}}]"),
    ])
    assert chain_stack.workers is not None
    with EventLogReader(redis_url, chain_stack.namespace) as log:
        run = http.post(f"/v1/chains/{chain['id']}/run", json={"inputs": {"topic": "t"}})
        assert run.status_code == 202
        run_id = run.json()["id"]
        poll(lambda: log.types(run_id).count("prompt_chunk") >= 3, timeout_s=30,
             what="the first step to be mid-stream")
        workers = poll(lambda: list(children(chain_stack.workers.pid)), what="worker pids")
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)

        done = wait_status(http, run_id, timeout_s=90)
        assert done["status"] == "succeeded", done
        types = poll(lambda: (seen := log.types(run_id)) and seen[-1] == "succeeded" and seen,
                     what="the run's succeeded event")
        events = log.events(run_id)
    assert types.count("execution_complete") == 1 and types.count("succeeded") == 1
    attempts = [e.data["attempt"] for e in events
                if e.type == "prompt_started" and e.data["promptId"] == 1]
    assert attempts == [1, 2]
    frames = [(e.id, e.type, e.data) for e in events]
    record = http.get(f"/v1/chains/runs/{run_id}").json()
    long, echo = record["steps"]
    assert len(long["output"].split()) == 40 and long["attempts"] == 2
    assert chunk_text(frames)[1] == long["output"]
    assert echo["input"] == f"[{long['output']}]" and echo["output"] == echo["input"]
    assert http.get(f"/v1/jobs/{long['job_id']}").json()["attempts"] == 2


def test_cancel_mid_run_stops_every_running_step_within_a_token(
    chain_http: httpx.Client, chain_stack: Stack, redis_url: str,
) -> None:
    http = chain_http
    slow = {"model": "dev/lorem", "max_tokens": 400, "dev_options": {"token_delay_ms": 30}}
    chain = create_chain(http, [
        {**prompt("L", 1, "{{topic}}"), **slow},
        {**prompt("R", 1, "{{topic}}"), **slow},
        prompt("Z", 2, "{{L}}{{R}}"),
    ])
    with EventLogReader(redis_url, chain_stack.namespace) as log:
        run_id = http.post(f"/v1/chains/{chain['id']}/run",
                           json={"inputs": {"topic": "t"}}).json()["id"]

        def both_streaming() -> bool:
            ids = {e.data["promptId"] for e in log.events(run_id) if e.type == "prompt_chunk"}
            return ids == {1, 2}

        poll(both_streaming, timeout_s=30, what="both steps to stream")
        cancelled = http.post(f"/v1/chains/runs/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        def steps_stopped() -> list[dict[str, Any]] | None:
            steps = http.get(f"/v1/chains/runs/{run_id}").json()["steps"]
            return steps if all(s["status"] in ("cancelled", "pending") for s in steps) else None

        steps = poll(steps_stopped, timeout_s=15, what="the steps to stop")
        types = log.types(run_id)
    assert "prompt_chunk" not in types[types.index("cancelled"):]
    for step in steps[:2]:
        job = wait_status(http, step["job_id"])
        assert job["status"] == "cancelled"
    assert steps[2]["status"] == "pending"
    assert http.post(f"/v1/chains/runs/{run_id}/cancel").status_code == 409


def test_a_run_past_its_time_limit_fails_with_timeout(start_stack: Any) -> None:
    stack = start_stack(env={"CHAIN_RUN_TIMEOUT_S": "2", "WORKER_CPU_PROCESSES": "0"})
    with client(stack) as http:
        chain = create_chain(http, [prompt("Slow", 1, "{{topic}}", model="dev/lorem",
                                           max_tokens=400, dev_options={"token_delay_ms": 50})])
        run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                    {"inputs": {"topic": "t"}})
        assert frames[-1][1] == "execution_failed"
        assert frames[-1][2]["error"]["code"] == "TIMEOUT"
        assert frames[-1][2]["promptId"] == 1
        job = wait_status(http, run_id)
        assert job["status"] == "failed" and job["error"]["code"] == "TIMEOUT"
        step = poll(lambda: (s := http.get(f"/v1/chains/runs/{run_id}").json()["steps"][0])
                    and s["status"] == "cancelled" and s, what="the step to stop")
        assert wait_status(http, step["job_id"])["status"] == "cancelled"


def test_a_step_with_knowledge_ids_retrieves_first_and_cites_its_sources(
    http: httpx.Client,
) -> None:
    base = create_base(http, name="chain facts")
    document = ingest(http, base["id"], "falcons.txt",
                      b"The peregrine falcon nests on cliff ledges and tall buildings.\n"
                      b"Its dive is the fastest motion of any animal.\n", "text/plain")
    assert document["status"] == "processed", document
    chain = create_chain(http, [
        prompt("Research", 1, "Context: {{context}} Question: {{topic}}",
               knowledge_ids=[base["id"]], retrieval={"mode": "hybrid", "limit": 3}),
        prompt("Answer", 2, "{{Research}}"),
    ])
    run_id, frames = stream_run(http, f"/v1/chains/{chain['id']}/run",
                                {"inputs": {"topic": "where does the peregrine falcon nest"}})
    assert frames[-1][1] == "execution_complete"
    research = next(d for _, kind, d in frames if kind == "prompt_complete" and d["promptId"] == 1)
    assert "cliff ledges" in research["output"]
    assert research["output"].startswith("Context: [1] ")
    sources = research["metadata"]["sources"]
    assert sources and sources[0]["document_id"] == document["id"]
    assert sources[0]["knowledge_id"] == base["id"]
    step = http.get(f"/v1/chains/runs/{run_id}").json()["steps"][0]
    assert "{{context}}" not in step["input"] and "cliff ledges" in step["input"]


def test_following_a_finished_run_whose_log_expired_ends_at_once(
    http: httpx.Client, stack: Stack, log: EventLogReader,
) -> None:
    chain = create_chain(http, [prompt("A", 1, "{{topic}}")])
    run_id = http.post(f"/v1/chains/{chain['id']}/run", json={"inputs": {"topic": "gone"}}
                       ).json()["id"]
    assert wait_status(http, run_id)["status"] == "succeeded"
    poll(lambda: log.types(run_id)[-1:] == ["succeeded"], what="the run's last event")
    assert log.redis.delete(Keys(stack.namespace).events(run_id)) == 1
    with connect_sse(http, "GET", f"/v1/chains/runs/{run_id}/events",
                     timeout=httpx.Timeout(10.0)) as source:
        frames = [sse.json() for sse in source.iter_sse() if sse.data]
    assert frames == [{"type": "execution_complete", "results": [
        {"promptId": 1, "name": "A", "position": 1, "status": "succeeded", "output": "gone",
         "metadata": frames[0]["results"][0]["metadata"]}]}]
