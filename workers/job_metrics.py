"""Job lifecycle metrics of a worker process: the one place workers/jobs.py reports to.

Queue wait is read from the Dramatiq message being processed: `message_timestamp` is when
it was enqueued, and a delayed message (a retry with backoff) carries its due time as
`eta`; the wait counts from the later of the two, so backoff is not reported as queueing.
"""

from __future__ import annotations

import time

from dramatiq.middleware import CurrentMessage

from pipelines import metrics


class AttemptTimer:
    """One claimed attempt: counted started (and retried) now, in flight until `done`."""

    __slots__ = ("_kind", "_started", "_in_flight")

    def __init__(self, kind: str, attempt: int) -> None:
        self._kind = kind
        self._started = time.perf_counter()
        metrics.jobs_started(kind).inc()
        if attempt > 1:
            metrics.jobs_retried(kind).inc()
        wait_s = queue_wait_s(time.time())
        if wait_s is not None:
            metrics.job_queue_wait(kind).observe(wait_s)
        self._in_flight = metrics.jobs_in_flight(kind)
        self._in_flight.inc()

    def done(self) -> None:
        self._in_flight.dec()
        metrics.job_run(self._kind).observe(time.perf_counter() - self._started)


def queue_wait_s(now_s: float) -> float | None:
    """Seconds the current message waited for a worker; None outside a Dramatiq actor."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return None
    since_ms = max(message.message_timestamp, int(message.options.get("eta") or 0))
    return max(0.0, now_s - since_ms / 1000)


def succeeded(kind: str) -> None:
    metrics.jobs_succeeded(kind).inc()


def failed(kind: str, code: str) -> None:
    metrics.jobs_failed(kind, code).inc()


def cancelled(kind: str) -> None:
    metrics.jobs_cancelled(kind).inc()
