"""Prometheus metrics that move with real traffic: the API's `/metrics` and the worker
supervisor's merged `/metrics`, scraped before and after chat completions, a failing
upstream, a streamed answer and job reads — real uvicorn, worker processes, Postgres,
Redis; a fake OpenAI upstream. Also `/health` (STING's shape) and `/v1/system/metrics`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.devservices import free_port
from tests.fakes.upstream import FakeUpstream
from tests.integration.accounts import new_user
from tests.integration.conftest import Stack, StartStack
from tests.integration.gateway import register_model
from tests.integration.jobclient import client, poll

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples that have these labels (and any others)."""
    wanted = set(labels.items())
    return sum(v for (sample, have), v in samples.items() if sample == name and wanted <= have)


@pytest.fixture
def metrics_stack(start_stack: StartStack) -> Stack:
    return start_stack(env={"WORKER_METRICS_PORT": str(free_port()),
                            "QUEUE_METRICS_INTERVAL_S": "0.2"})


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", echo=True) as fake:
        yield fake


def _worker_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['WORKER_METRICS_PORT']}/metrics"


def _wait_worker_metrics(stack: Stack) -> Callable[[], Samples]:
    """The supervisor serves once it has started; wait for its first answer."""
    def get() -> Samples | None:
        try:
            return scrape(_worker_url(stack))
        except httpx.TransportError:
            return None
    poll(get, timeout_s=30)
    return lambda: scrape(_worker_url(stack))


def test_n_chat_completions_move_every_counter_by_n_on_the_api_and_the_workers(
    metrics_stack: Stack, upstream: FakeUpstream,
) -> None:
    stack = metrics_stack
    worker_scrape = _wait_worker_metrics(stack)
    model = register_model(stack, upstream.base_url)["id"]
    broken = register_model(stack, upstream.base_url, timeout_s=5)["id"]
    api_before, workers_before = scrape(f"{stack.base_url}/metrics"), worker_scrape()
    n = 4
    prompt_tokens = completion_tokens = 0
    job_ids = []
    with client(stack) as http:
        for i in range(n):
            response = http.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert response.status_code == 200, response.text
            usage = response.json()["usage"]
            prompt_tokens += usage["prompt_tokens"]
            completion_tokens += usage["completion_tokens"]
            job_ids.append(response.headers["x-job-id"])
        # A streamed answer is one more completion, and one SSE stream open while it lasts
        # (paced, so it is still open when scraped).
        upstream.reset(text="one two three four five", gap_ms=1000)
        with http.stream("POST", "/v1/chat/completions", json={
                "model": model, "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "stream me"}]}) as streamed:
            assert streamed.status_code == 200
            lines = streamed.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            during = scrape(f"{stack.base_url}/metrics")
            body = "\n".join(lines)
        assert "[DONE]" in body
        upstream.reset(error_status=400, error_times=None)
        failed = http.post("/v1/chat/completions", json={
            "model": broken, "messages": [{"role": "user", "content": "fail"}]})
        assert failed.status_code == 400, failed.text
        for job_id in job_ids[:2]:
            assert http.get(f"/v1/jobs/{job_id}").status_code == 200

    api_after, workers_after = scrape(f"{stack.base_url}/metrics"), worker_scrape()

    def api_delta(name: str, **labels: str) -> float:
        return value(api_after, name, **labels) - value(api_before, name, **labels)

    def worker_delta(name: str, **labels: str) -> float:
        return value(workers_after, name, **labels) - value(workers_before, name, **labels)

    chat_route = {"route": "/v1/chat/completions", "method": "POST"}
    assert api_delta("switchyard_http_requests_total", **chat_route, status="200") == n + 1
    assert api_delta("switchyard_http_requests_total", **chat_route, status="400") == 1
    assert api_delta("switchyard_http_request_duration_seconds_count", **chat_route) == n + 2
    # Route templates, never the ids in the path.
    assert api_delta("switchyard_http_requests_total", route="/v1/jobs/{job_id}",
                     method="GET", status="200") == 2
    assert not any(job_id in str(key) for key in api_after for job_id in job_ids)
    assert api_delta("switchyard_jobs_enqueued_total", kind="chat") == n + 2
    assert value(during, "switchyard_streams_open", transport="sse") == 1
    assert value(api_after, "switchyard_streams_open", transport="sse") == 0

    assert worker_delta("switchyard_jobs_started_total", kind="chat") == n + 2
    assert worker_delta("switchyard_jobs_succeeded_total", kind="chat") == n + 1
    assert (total(workers_after, "switchyard_jobs_failed_total", kind="chat")
            - total(workers_before, "switchyard_jobs_failed_total", kind="chat")) == 1
    assert worker_delta("switchyard_job_queue_wait_seconds_count", kind="chat") == n + 2
    assert worker_delta("switchyard_job_run_seconds_count", kind="chat") == n + 2
    assert value(workers_after, "switchyard_jobs_in_flight", kind="chat") == 0
    assert worker_delta("switchyard_chat_completions_total", model=model) == n + 1
    assert worker_delta("switchyard_chat_tokens_total", model=model,
                        direction="in") >= prompt_tokens > 0
    assert worker_delta("switchyard_chat_tokens_total", model=model,
                        direction="out") >= completion_tokens > 0
    tokens_in = worker_delta("switchyard_chat_tokens_total", model=model, direction="in")
    tokens_out = worker_delta("switchyard_chat_tokens_total", model=model, direction="out")
    assert worker_delta("switchyard_chat_cost_usd_total", model=model) == pytest.approx(
        (tokens_in * 1.5 + tokens_out * 6.0) / 1_000_000)
    assert worker_delta("switchyard_upstream_ttft_seconds_count", provider="openai",
                        model=model) == n + 1
    assert worker_delta("switchyard_upstream_duration_seconds_count", provider="openai",
                        model=model) == n + 1
    assert total(workers_after, "switchyard_upstream_errors_total", provider="openai",
                 model=broken) == 1


def test_queue_gauges_come_from_redis_and_health_and_system_metrics_answer_stings_shape(
    metrics_stack: Stack, database_url: str,
) -> None:
    stack = metrics_stack
    samples = poll(lambda: (s if value(s := scrape(f"{stack.base_url}/metrics"),
                                       "switchyard_workers_alive") >= 1 else None),
                   timeout_s=20)
    assert ("switchyard_queue_depth", frozenset({("queue", "chat")})) in samples
    assert ("switchyard_queue_dead_letters", frozenset({("queue", "ingest")})) in samples
    # Deployments per state, from Postgres: every state listed, adding up to the table.
    states = {dict(labels)["state"]: v for (name, labels), v in samples.items()
              if name == "switchyard_deployments"}
    assert {"pending", "running", "stopped", "failed"} <= set(states)
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        rows = db.execute("SELECT count(*) FROM deployments").fetchone()
    assert rows is not None and sum(states.values()) == rows[0]
    with client(stack) as http:
        health = http.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert set(body) == {"status", "timestamp", "services", "version", "uptime"}
        assert body["status"] == "healthy"
        assert body["services"] == {"database": "healthy", "redis": "healthy",
                                    "workers": "healthy"}
        assert body["uptime"] > 0
        for _ in range(3):
            answered = http.post("/v1/chat/completions", json={
                "model": "dev/echo", "messages": [{"role": "user", "content": "hi"}]})
            assert answered.status_code == 200, answered.text
        assert http.get("/v1/nowhere").status_code == 404
        report = http.get("/v1/system/metrics")
        assert report.status_code == 200, report.text
        data = report.json()
        assert data["requests"]["total_today"] >= 5
        assert data["requests"]["average_response_time"] > 0
        assert 0 <= data["requests"]["error_rate"] < 1
        assert data["models"]["total_inferences"] >= 3
        assert "dev/echo" in data["models"]["active_models"]
        assert set(data["performance"]) == {"cpu_usage", "memory_usage", "disk_usage"}
        user_key = _user_key(http)
    with httpx.Client(base_url=stack.base_url, timeout=10.0,
                      headers={"Authorization": f"Bearer {user_key}"}) as user:
        assert user.get("/v1/system/metrics").status_code == 403


def _user_key(http: httpx.Client) -> str:
    return new_user(http, dict(http.headers)).key
