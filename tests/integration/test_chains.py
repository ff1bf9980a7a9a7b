"""Chains end to end: real uvicorn, real dramatiq workers, real Postgres and Redis; dev models.

Positions run one after another, prompts at one position in parallel as their own jobs;
every event of a run is on the run's own log in AI Studio's names.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
from httpx_sse import connect_sse

from pipelines.events import stream_id_key
from tests.integration.jobclient import wait_status

CHAIN_TYPES = ("execution_started", "prompt_started", "prompt_chunk", "prompt_complete",
               "execution_complete", "execution_failed")
FAST_REDELIVERY = {"BROKER_HEARTBEAT_TIMEOUT_MS": "2000", "BROKER_MAINTENANCE_CHANCE": "1000000"}


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
