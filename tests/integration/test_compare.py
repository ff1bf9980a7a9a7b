"""Model comparison end to end: whole, streamed and async answers, prices from the registry,
and a failing model that does not fail the comparison — real uvicorn, dramatiq, Postgres,
Redis; dev models, plus registry entries for prices and for an unreachable upstream."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.integration.jobclient import wait_status


def register(http: httpx.Client, **body: Any) -> str:
    model_id = f"test/{uuid.uuid4().hex[:10]}"
    response = http.post("/v1/admin/models", json={"id": model_id, **body})
    assert response.status_code in (200, 201), response.text
    return model_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_comparison_answers_every_model_with_tokens_timings_and_cost(
    http: httpx.Client,
) -> None:
    priced = register(http, provider="dev", upstream_model="echo",
                      input_price_per_mtok=3.0, output_price_per_mtok=15.0)
    response = http.post("/v1/compare", json={
        "prompt": "compare these words", "models": ["dev/echo", priced, "dev/lorem"],
        "system_prompt": "Answer.", "max_tokens": 5}, timeout=30.0)
    assert response.status_code == 200, response.text
    assert response.headers["x-job-id"]
    result = response.json()
    assert result["prompt"] == "compare these words"
    echo, paid, lorem = result["results"]
    assert [echo["model"], paid["model"], lorem["model"]] == ["dev/echo", priced, "dev/lorem"]
    assert echo["response"] == paid["response"] == "compare these words"
    assert len(lorem["response"].split()) == 5 and lorem["finish_reason"] == "length"
    for item in result["results"]:
        assert item["error"] is None
        assert item["tokens"]["prompt"] > 0 and item["tokens"]["completion"] > 0
        assert item["duration_ms"] > 0 and item["ttft_ms"] is not None
    assert echo["cost_usd"] == 0.0
    tokens = paid["tokens"]
    assert paid["cost_usd"] == pytest.approx(
        (tokens["prompt"] * 3.0 + tokens["completion"] * 15.0) / 1_000_000)

    job = wait_status(http, response.headers["x-job-id"])
    assert job["kind"] == "compare" and job["result"] == result


def test_a_streamed_comparison_tags_deltas_by_model_and_ends_with_every_result(
    http: httpx.Client,
) -> None:
    body = {"prompt": "one two three four", "models": ["dev/echo", "dev/lorem"],
            "max_tokens": 6, "dev_options": {"token_delay_ms": 5}, "stream": True}
    events: list[tuple[str, dict[str, Any]]] = []
    with connect_sse(http, "POST", "/v1/compare", json=body,
                     timeout=httpx.Timeout(30.0)) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            events.append((sse.event, sse.json()))

    assert events[-1][0] == "finish"
    final = events[-1][1]["results"]
    for index, model in enumerate(("dev/echo", "dev/lorem")):
        mine = [(kind, data) for kind, data in events[:-1] if data["model"] == model]
        assert mine[0] == ("model-start", {"model": model, "index": index})
        assert mine[-1][0] == "model-finish"
        text = "".join(data["text"] for kind, data in mine if kind == "text-delta")
        assert text == final[index]["response"] == mine[-1][1]["response"]
    assert final[0]["response"] == "one two three four"


def test_an_async_comparison_returns_the_job_to_follow(http: httpx.Client) -> None:
    response = http.post("/v1/compare", json={
        "prompt": "later", "models": ["dev/echo", "dev/lorem"], "async": True})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "compare" and job["status"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert "async" not in job["input"] and "stream" not in job["input"]
    done = wait_status(http, job["id"])
    assert done["status"] == "succeeded"
    assert [r["response"] for r in done["result"]["results"]][0] == "later"


def test_a_failing_model_reports_its_error_without_failing_the_comparison(
    http: httpx.Client,
) -> None:
    down = register(http, provider="openai", upstream_model="gpt-none",
                    base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="sk-test-unused",
                    timeout_s=2)
    response = http.post("/v1/compare", json={
        "prompt": "still here", "models": [down, "dev/echo"]}, timeout=60.0)
    assert response.status_code == 200, response.text
    failed, ok = response.json()["results"]
    assert failed["error"]["code"] in ("UPSTREAM_UNAVAILABLE", "UPSTREAM_ERROR",
                                       "UPSTREAM_TIMEOUT")
    assert "sk-test-unused" not in response.text
    assert failed["response"] == "" and failed["cost_usd"] == 0.0
    assert ok["error"] is None and ok["response"] == "still here"


def test_bad_comparisons_are_refused_before_a_job_is_made(http: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        ({"prompt": "x", "models": ["dev/echo"]}, 422),
        ({"prompt": "x", "models": ["dev/echo"] * 2}, 422),
        ({"prompt": "x", "models": ["dev/echo", "dev/lorem", "a", "b", "c"]}, 422),
        ({"prompt": "", "models": ["dev/echo", "dev/lorem"]}, 422),
        ({"models": ["dev/echo", "dev/lorem"]}, 422),
        ({"prompt": "x", "models": ["dev/echo", "dev/lorem"], "max_tokens": 0}, 422),
        ({"prompt": "x", "models": ["dev/echo", "no/such-model"]}, 404),
    ]

    def compare_jobs() -> list[str]:
        listed = http.get("/v1/jobs", params={"kind": "compare", "limit": 100}).json()["data"]
        return [job["id"] for job in listed]

    before = compare_jobs()
    for body, status in cases:
        response = http.post("/v1/compare", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"]
    assert compare_jobs() == before


def test_a_compare_job_with_bad_input_is_refused_at_the_edge(http: httpx.Client) -> None:
    submitted = http.post("/v1/jobs", json={"kind": "compare",
                                            "input": {"prompt": "x", "models": ["dev/echo"]}})
    assert submitted.status_code == 422, submitted.text
    error = submitted.json()["error"]
    assert error["code"] == "VALIDATION_FAILED"
    assert error["details"][0]["field"] == "input.models"
