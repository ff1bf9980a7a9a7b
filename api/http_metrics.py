"""HTTP metrics at the edge, and the `/metrics` exposition of this process (or all of them).

`HttpMetricsMiddleware` counts every HTTP request by route template, method and status and
times it. It wraps neither `send` nor `receive`: the route comes from `scope["route"]`
(Starlette's router sets it on the shared scope) and the status from the one that
RequestIdMiddleware, which already looks at every response start, leaves in
`scope["state"]` (`RESPONSE_STATUS`). So a streamed answer pays nothing per frame, and a
request pays two dict lookups and two metric updates on its cached label children.

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

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import route_group
from api.request_totals import REQUEST_TOTALS
from pipelines import metrics

RESPONSE_STATUS = "response_status"
# Requests no route matched: one label value, so a scanner cannot grow the series.
UNMATCHED_ROUTE = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
    REQUEST_TOTALS.add(status, elapsed_s)
    metrics.http_requests(template, method, str(status)).inc()
    metrics.http_duration(template, method).observe(elapsed_s)
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
