"""Every Prometheus metric Switchyard exports, defined in one place.

The API process and every worker process import this module; each exports the families it
touches (an untouched labelled family shows only its HELP and TYPE lines). Names and labels
live here so the Grafana dashboard (deploy/grafana/switchyard.json) and the tests read one
list. Labels are bounded: route templates, job kinds, queue names, model ids from the
registry, provider names, error codes, rate-limit groups, ingestion stages — never a raw
path, a job id or a user id.

Hot paths (one HTTP request, one chat completion) reach their children through
`Children`, a plain dict in front of `.labels()`: prometheus_client's `.labels()` validates
and stringifies the values and takes a lock on every call; a dict lookup does not.

Multi-process: prometheus_client picks its value class when it is first imported, from
`PROMETHEUS_MULTIPROC_DIR`. The worker supervisor sets it for its children
(workers/supervise.py) and serves their merged metrics; an API run with several uvicorn
processes sets it itself. Gauges say how processes combine (`multiprocess_mode`).
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)

# Seconds: HTTP answers and queue waits go from sub-millisecond to minutes.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0, 60.0, 300.0)
# Jobs and upstream streams run longer: a long answer or an ingestion takes minutes.
RUN_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                 600.0, 1800.0, 3600.0)


class Children(Generic[_Metric]):
    """`metric.labels(*values)`, memoised: one dict lookup per call after the first.

    The label sets are bounded (see the module docstring), so the cache is too.
    """

    __slots__ = ("_metric", "_cache", "_lock")

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            with self._lock:
                child = self._cache.get(values)
                if child is None:
                    child = self._cache[values] = self._metric.labels(*values)
        return child


# --- HTTP (API) ---------------------------------------------------------------------------
# switchyard_http_requests_total and switchyard_http_request_duration_seconds are kept by
# api/http_metrics.py (plain counters read at scrape time: the hottest path of all).
STREAMS_OPEN = Gauge("switchyard_streams_open",
                     "SSE and WebSocket streams open now, by transport.",
                     ["transport"], multiprocess_mode="livesum")
RATE_LIMIT_REJECTIONS = Counter("switchyard_rate_limit_rejections_total",
                                "Requests refused 429 by the rate limiter, by route group.",
                                ["group"])
JOBS_ENQUEUED = Counter("switchyard_jobs_enqueued_total",
                        "Jobs sent to the broker by the API, by kind.", ["kind"])

# --- Jobs (workers) -----------------------------------------------------------------------
JOBS_STARTED = Counter("switchyard_jobs_started_total",
                       "Job attempts claimed by a worker, by kind.", ["kind"])
JOBS_SUCCEEDED = Counter("switchyard_jobs_succeeded_total", "Jobs succeeded, by kind.",
                         ["kind"])
JOBS_FAILED = Counter("switchyard_jobs_failed_total",
                      "Jobs failed for good, by kind and error code.", ["kind", "code"])
JOBS_CANCELLED = Counter("switchyard_jobs_cancelled_total",
                         "Job attempts that stopped because the job was cancelled, by kind.",
                         ["kind"])
JOBS_RETRIED = Counter("switchyard_jobs_retried_total",
                       "Job attempts after the first (broker redelivery or a retry asked "
                       "for), by kind.", ["kind"])
JOB_QUEUE_WAIT = Histogram("switchyard_job_queue_wait_seconds",
                           "Time a job's message waited in its queue (from enqueue, or from "
                           "its due time when delayed) until a worker took it, by kind.",
                           ["kind"], buckets=LATENCY_BUCKETS_S)
JOB_RUN = Histogram("switchyard_job_run_seconds",
                    "Time one job attempt ran in a worker (claim to outcome), by kind.",
                    ["kind"], buckets=RUN_BUCKETS_S)
JOBS_IN_FLIGHT = Gauge("switchyard_jobs_in_flight", "Job attempts running now, by kind.",
                       ["kind"], multiprocess_mode="livesum")

# --- Queues (refreshed from Redis on an interval, see api/queue_gauges.py) ----------------
QUEUE_DEPTH = Gauge("switchyard_queue_depth", "Messages ready in a queue.", ["queue"],
                    multiprocess_mode="mostrecent")
QUEUE_DELAYED = Gauge("switchyard_queue_delayed",
                      "Messages waiting for their due time (retries with backoff).",
                      ["queue"], multiprocess_mode="mostrecent")
QUEUE_DEAD_LETTERS = Gauge("switchyard_queue_dead_letters",
                           "Messages in a queue's dead-letter set.", ["queue"],
                           multiprocess_mode="mostrecent")
DEPLOYMENTS = Gauge("switchyard_deployments", "Deployments per state (from Postgres, on the "
                    "queue gauges' interval).", ["state"], multiprocess_mode="mostrecent")
DEPLOYMENT_HOURLY_COST = Gauge("switchyard_deployment_hourly_cost_usd",
                               "Estimated hourly cost of the deployments in each state.",
                               ["state"], multiprocess_mode="mostrecent")

# --- Chat and upstreams (workers) ---------------------------------------------------------
CHAT_COMPLETIONS = Counter("switchyard_chat_completions_total",
                           "Chat completions that succeeded, by the model that answered.",
                           ["model"])
CHAT_TOKENS = Counter("switchyard_chat_tokens_total",
                      "Chat tokens by model and direction (in: prompt, out: completion).",
                      ["model", "direction"])
CHAT_COST = Counter("switchyard_chat_cost_usd_total",
                    "Chat cost in US dollars at the registry's prices, by model.", ["model"])
UPSTREAM_TTFT = Histogram("switchyard_upstream_ttft_seconds",
                          "Time from asking an upstream to its first token.",
                          ["provider", "model"], buckets=LATENCY_BUCKETS_S)
UPSTREAM_DURATION = Histogram("switchyard_upstream_duration_seconds",
                              "Time from asking an upstream to its last chunk.",
                              ["provider", "model"], buckets=RUN_BUCKETS_S)
UPSTREAM_ERRORS = Counter("switchyard_upstream_errors_total",
                          "Upstream calls that failed, by provider, model and error code.",
                          ["provider", "model", "code"])

# --- Ingestion (workers) ------------------------------------------------------------------
INGEST_DOCUMENTS = Counter("switchyard_ingest_documents_total", "Documents ingested.")
INGEST_PAGES = Counter("switchyard_ingest_pages_total", "Pages of documents ingested.")
INGEST_CHUNKS = Counter("switchyard_ingest_chunks_total", "Chunks written by ingestion.")
INGEST_STAGE = Histogram("switchyard_ingest_stage_seconds",
                         "Time per ingestion stage (partition, chunk, embed, write).",
                         ["stage"], buckets=RUN_BUCKETS_S)

streams_open = Children(STREAMS_OPEN)
rate_limit_rejections = Children(RATE_LIMIT_REJECTIONS)
jobs_enqueued = Children(JOBS_ENQUEUED)
jobs_started = Children(JOBS_STARTED)
jobs_succeeded = Children(JOBS_SUCCEEDED)
jobs_failed = Children(JOBS_FAILED)
jobs_cancelled = Children(JOBS_CANCELLED)
jobs_retried = Children(JOBS_RETRIED)
job_queue_wait = Children(JOB_QUEUE_WAIT)
job_run = Children(JOB_RUN)
jobs_in_flight = Children(JOBS_IN_FLIGHT)
chat_completions = Children(CHAT_COMPLETIONS)
chat_tokens = Children(CHAT_TOKENS)
chat_cost = Children(CHAT_COST)
upstream_ttft = Children(UPSTREAM_TTFT)
upstream_duration = Children(UPSTREAM_DURATION)
upstream_errors = Children(UPSTREAM_ERRORS)
ingest_stage = Children(INGEST_STAGE)


def record_chat(model: str, provider: str, result: dict[str, Any], cost_usd: float) -> None:
    """Count one successful chat completion: tokens, cost, and its upstream timings."""
    usage = result.get("usage") or {}
    chat_completions(model).inc()
    chat_tokens(model, "in").inc(int(usage.get("prompt_tokens") or 0))
    chat_tokens(model, "out").inc(int(usage.get("completion_tokens") or 0))
    if cost_usd:
        chat_cost(model).inc(cost_usd)
    if (ttft_ms := result.get("ttft_ms")) is not None:
        upstream_ttft(provider, model).observe(ttft_ms / 1000)
    if (duration_ms := result.get("duration_ms")) is not None:
        upstream_duration(provider, model).observe(duration_ms / 1000)


def record_ingest(result: dict[str, Any]) -> None:
    """Count one ingested document: its pages, chunks and the time of each stage."""
    if result.get("status") != "processed":
        return
    INGEST_DOCUMENTS.inc()
    INGEST_PAGES.inc(int(result.get("pages") or 0))
    INGEST_CHUNKS.inc(int(result.get("chunk_count") or 0))
    for stage, ms in (result.get("timings_ms") or {}).items():
        ingest_stage(stage).observe(ms / 1000)


def error_code(exc: BaseException) -> str:
    """A bounded label for an exception: its DomainError code, else its class name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__

