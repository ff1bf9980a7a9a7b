"""HTTP metrics at the edge, and the `/metrics` exposition of this process (or all of them).

`HttpMetricsMiddleware` counts every HTTP request by route template, method and status and
times it (`switchyard_http_requests_total`, `switchyard_http_request_duration_seconds`). It
wraps neither `send` nor `receive`: the route comes from `scope["route"]` (Starlette's
router sets it on the shared scope) and the status from the one that RequestIdMiddleware,
which already looks at every response start, leaves in `scope["state"]`
(`RESPONSE_STATUS`). So a streamed answer pays nothing per frame.

Per request it costs one dict lookup and three additions (`HttpStats.observe`): the
series are plain Python numbers turned into Prometheus samples only when scraped. Going
through prometheus_client's `Counter.inc` and `Histogram.observe` instead (a lock per
value, a bucket search) cost about 10 µs per request on the benchmark machine
(tests/bench/metrics_overhead.py). The event loop is the only writer, and a scrape
reads on that same loop, so no lock is needed. Under PROMETHEUS_MULTIPROC_DIR (several
uvicorn processes) the samples must live in prometheus_client's shared files, so the same
families are then ordinary prometheus_client metrics.

WebSocket connections are not requests: they are counted as open streams
(`switchyard_streams_open{transport="websocket"}`) for as long as they last. SSE streams
are counted by `api/job_replies.StreamResponse`.

A 429 is also counted as a rate-limit rejection of its route group (api/limits.route_group):
the limiter answers every refusal with 429, so the edge sees them all without a hook in
each place that refuses.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import route_group
from api.request_totals import REQUEST_TOTALS
from pipelines import metrics
from pipelines.metrics import LATENCY_BUCKETS_S

RESPONSE_STATUS = "response_status"
# Requests no route matched: one label value, so a scanner cannot grow the series.
UNMATCHED_ROUTE = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUESTS = ("switchyard_http_requests_total",
             "HTTP requests answered, by route template, method and status.")
_DURATION = ("switchyard_http_request_duration_seconds",
             "Time from request to the end of the response (a stream's whole life), by "
             "route template and method.")
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Series:
    __slots__ = ("count", "sum_s", "buckets")

    def __init__(self, buckets: int) -> None:
        self.count = 0
        self.sum_s = 0.0
        self.buckets = [0] * buckets


class HttpStats(Collector):
    """Requests and their durations per (route, method, status), as plain numbers."""

    def __init__(self, bounds_s: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self._bounds = bounds_s
        self._series: dict[tuple[str, str, int], _Series] = {}

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[(route, method, status)] = _Series(len(self._bounds) + 1)
        series.count += 1
        series.sum_s += elapsed_s
        # `le` buckets: the first bound >= the value (the last slot is +Inf).
        series.buckets[bisect_left(self._bounds, elapsed_s)] += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(_REQUESTS[0].removesuffix("_total"), _REQUESTS[1],
                                       labels=["route", "method", "status"])
        merged: dict[tuple[str, str], _Series] = {}
        for (route, method, status), series in list(self._series.items()):
            requests.add_metric([route, method, str(status)], series.count)
            into = merged.setdefault((route, method), _Series(len(series.buckets)))
            into.count += series.count
            into.sum_s += series.sum_s
            into.buckets = [a + b for a, b in zip(into.buckets, series.buckets, strict=True)]
        duration = HistogramMetricFamily(*_DURATION, labels=["route", "method"])
        bounds = [*(floatToGoString(b) for b in self._bounds), "+Inf"]
        for (route, method), series in merged.items():
            cumulative, running = [], 0
            for bound, hits in zip(bounds, series.buckets, strict=True):
                running += hits
                cumulative.append((bound, running))
            duration.add_metric([route, method], cumulative, series.sum_s)
        yield requests
        yield duration


class _SharedHttpStats:
    """The same families as prometheus_client metrics, for multiprocess mode."""

    def __init__(self) -> None:
        self._requests = metrics.Children(Counter(*_REQUESTS, ["route", "method", "status"]))
        self._duration = metrics.Children(Histogram(*_DURATION, ["route", "method"],
                                                    buckets=LATENCY_BUCKETS_S))

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        self._requests(route, method, str(status)).inc()
        self._duration(route, method).observe(elapsed_s)


def _http_stats() -> HttpStats | _SharedHttpStats:
    if MULTIPROCESS:
        return _SharedHttpStats()
    stats = HttpStats()
    REGISTRY.register(stats)
    return stats


# This process's series: like prometheus_client's default registry, one per process.
HTTP_STATS = _http_stats()


class HttpMetricsMiddleware:
    """Counts and times every HTTP request; counts WebSocket connections while open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            gauge = metrics.streams_open("websocket")
            gauge.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                gauge.dec()
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        try:
            await self.app(scope, receive, send)
            status = scope.get("state", {}).get(RESPONSE_STATUS, 500)
        finally:
            _record(scope, status, time.perf_counter() - started)


def _record(scope: Scope, status: int, elapsed_s: float) -> None:
    route = scope.get("route")
    template: str = getattr(route, "path", None) or UNMATCHED_ROUTE
    method: str = scope.get("method", "GET")
    if method not in _METHODS:
        method = "OTHER"
    HTTP_STATS.observe(template, method, status, elapsed_s)
    REQUEST_TOTALS.add(status, elapsed_s)
    if status == 429:
        metrics.rate_limit_rejections(route_group(method, scope.get("path", ""))).inc()


def exposition() -> tuple[bytes, str]:
    """This process's metrics, or every API process's under PROMETHEUS_MULTIPROC_DIR."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST
