"""The metrics' own mechanics: HTTP series kept as plain numbers expose the same families a
Counter and a Histogram would, and the worker supervisor's server merges its children's
multiprocess samples, keeping a dead child's counts but not its in-flight gauge."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.devservices import free_port
from api.http_metrics import HttpStats
from workers.metrics_server import WorkerMetrics


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_http_stats_count_by_status_and_merge_statuses_into_one_cumulative_histogram() -> None:
    stats = HttpStats(bounds_s=(0.01, 0.1, 1.0))
    for elapsed in (0.005, 0.01, 0.05):
        stats.observe("/v1/jobs/{job_id}", "GET", 200, elapsed)
    stats.observe("/v1/jobs/{job_id}", "GET", 404, 2.0)
    registry = CollectorRegistry()
    registry.register(stats)
    samples = _samples(generate_latest(registry).decode())
    route = {("route", "/v1/jobs/{job_id}"), ("method", "GET")}

    def get(name: str, **extra: str) -> float:
        return samples[(name, frozenset(route | set(extra.items())))]

    assert get("switchyard_http_requests_total", status="200") == 3
    assert get("switchyard_http_requests_total", status="404") == 1
    assert get("switchyard_http_request_duration_seconds_bucket", le="0.01") == 2
    assert get("switchyard_http_request_duration_seconds_bucket", le="0.1") == 3
    assert get("switchyard_http_request_duration_seconds_bucket", le="1.0") == 3
    assert get("switchyard_http_request_duration_seconds_bucket", le="+Inf") == 4
    assert get("switchyard_http_request_duration_seconds_count") == 4
    assert abs(get("switchyard_http_request_duration_seconds_sum") - 2.065) < 1e-9


_CHILD = textwrap.dedent("""
    import sys
    from pipelines import metrics
    metrics.jobs_started("chat").inc(int(sys.argv[1]))
    metrics.jobs_in_flight("chat").inc()
    print("ok", flush=True)
    sys.stdin.read()  # stays alive until the test closes its stdin
""")


def test_the_supervisor_serves_its_childrens_counts_merged_and_drops_a_dead_childs_gauges(
    tmp_path: Path,
) -> None:
    server = WorkerMetrics(port=free_port(), host="127.0.0.1", directory=str(tmp_path))
    server.start()
    children = []
    try:
        for count in (2, 3):
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(count)], env={
                    **os.environ, **server.child_env()},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
            assert child.stdout is not None and child.stdout.readline() == b"ok\n"
            children.append(child)
        url = f"http://127.0.0.1:{server.port}/metrics"
        live = _samples(httpx.get(url).text)
        kind = frozenset({("kind", "chat")})
        assert live[("switchyard_jobs_started_total", kind)] == 5
        assert live[("switchyard_jobs_in_flight", kind)] == 2
        first = children.pop(0)
        _end(first)
        server.child_exited(first.pid)
        after = _samples(httpx.get(url).text)
        assert after[("switchyard_jobs_started_total", kind)] == 5
        assert after[("switchyard_jobs_in_flight", kind)] == 1
    finally:
        for child in children:
            _end(child)
        server.close()


def _end(child: subprocess.Popen[bytes]) -> None:
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            pipe.close()
    child.wait(10)


_API_PROCESS = textwrap.dedent("""
    import sys, types
    from api.http_metrics import HTTP_STATS, MULTIPROCESS, _record, exposition
    assert MULTIPROCESS, "PROMETHEUS_MULTIPROC_DIR was not seen"
    route = types.SimpleNamespace(path="/v1/jobs/{job_id}")
    for _ in range(int(sys.argv[1])):
        _record({"route": route, "method": "GET", "path": "/v1/jobs/x", "state": {}},
                200, 0.01)
    print(exposition()[0].decode(), flush=True)
""")


def test_api_processes_under_multiproc_dir_share_their_http_series(tmp_path: Path) -> None:
    """Several uvicorn processes: each one's /metrics shows the requests of them all."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [subprocess.run([sys.executable, "-c", _API_PROCESS, str(count)], env=env,
                              capture_output=True, check=True, cwd=Path(__file__).parents[2])
               .stdout.decode() for count in (2, 3)]
    merged = _samples(outputs[-1])
    labels = frozenset({("route", "/v1/jobs/{job_id}"), ("method", "GET"), ("status", "200")})
    assert merged[("switchyard_http_requests_total", labels)] == 5
    histogram = frozenset({("route", "/v1/jobs/{job_id}"), ("method", "GET"), ("le", "+Inf")})
    assert merged[("switchyard_http_request_duration_seconds_bucket", histogram)] == 5
