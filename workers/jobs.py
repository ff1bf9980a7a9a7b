"""The job lifecycle every actor shares: claim, run one pipeline, record, publish.

An attempt claims the job with a conditional UPDATE; a job that is already finished or
cancelled is skipped, so a redelivered message never completes a job twice. The terminal
event is published after the commit, so a client that sees it and reads the job agrees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dramatiq.middleware import CurrentMessage
from sqlalchemy import Connection

from pipelines.db import jobs as jobs_db
from pipelines.errors import DomainError, JobCancelled, UpstreamUnavailable
from workers.resources import Resources, current
from workers.webhooks import deliver_webhook

log = logging.getLogger("switchyard.jobs")

_PROGRESS_INTERVAL_S = 0.5


@dataclass(slots=True)
class JobContext:
    """What a pipeline sees of its job: the input, and ways to report back."""

    job_id: str
    attempt: int
    kind: str
    owner_id: str
    input: dict[str, Any]
    resources: Resources
    key_id: str | None = None
    # Writes that must commit together with the job's success (usage records), run in the
    # same transaction as the status change.
    on_success: list[Callable[[Connection], None]] = field(default_factory=list)
    _last_progress_at: float = field(default=0.0)

    def emit(self, type_: str, data: dict[str, Any]) -> bool:
        """Publish one event; True means the job was cancelled and the work should stop."""
        _, cancelled = self.resources.events.publish(self.job_id, type_, data,
                                                     attempt=self.attempt)
        return cancelled

    def progress(self, fraction: float, **data: Any) -> None:
        """Record progress (throttled), publish a `progress` event; raise if cancelled."""
        now = time.monotonic()
        if now - self._last_progress_at >= _PROGRESS_INTERVAL_S or fraction >= 1.0:
            self._last_progress_at = now
            with self.resources.autocommit.connect() as conn:
                conn.execute(*jobs_db.set_progress(self.job_id, self.attempt, fraction))
        if self.emit("progress", {"progress": round(fraction, 4), **data}):
            raise JobCancelled("The job was cancelled.")


def execute(job_id: str, work: Callable[[JobContext], Any]) -> None:
    """Run one attempt of a job. Raises only for transient failures the broker should retry."""
    res = current()
    with res.autocommit.connect() as conn:
        claimed = conn.execute(*jobs_db.mark_running(job_id)).first()
    if claimed is None:
        _ensure_terminal_event(res, job_id)
        return
    ctx = JobContext(job_id=job_id, attempt=claimed.attempts, kind=claimed.kind,
                     owner_id=claimed.owner_id, input=claimed.input, resources=res,
                     key_id=claimed.key_id)
    if ctx.attempt > 1:
        # Tells followers to drop partial output: the next attempt starts from scratch.
        ctx.emit("retry", {"attempt": ctx.attempt})
    if ctx.emit("started", {"attempt": ctx.attempt}):
        return
    started = time.perf_counter()
    try:
        result = work(ctx)
    except JobCancelled:
        log.info("job cancelled", extra={"job_id": job_id})
        return
    except DomainError as exc:
        _fail(res, ctx, exc.code, exc.message, status=getattr(exc, "status", None),
              retry_after_s=getattr(exc, "retry_after_s", None))
        return
    except Exception as exc:
        if _deliveries(ctx.attempt) >= res.settings.job_max_attempts:
            log.exception("job failed after %d attempts", ctx.attempt, extra={"job_id": job_id})
            _fail(res, ctx, *_public_error(exc))
            return
        log.warning("job attempt %d failed, will retry: %r", ctx.attempt, exc,
                    extra={"job_id": job_id})
        raise
    with (res.engine.begin() if ctx.on_success else res.autocommit.connect()) as conn:
        done = conn.execute(*jobs_db.mark_succeeded(job_id, ctx.attempt, result)).first()
        if done is not None:
            for write in ctx.on_success:
                write(conn)
    if done is not None:
        res.events.publish(job_id, "succeeded", {"result": result}, terminal=True,
                           attempt=ctx.attempt)
        _webhook(done)
        log.info("job succeeded in %.1f ms", (time.perf_counter() - started) * 1000,
                 extra={"job_id": job_id})


def _deliveries(attempt: int) -> int:
    """How often this message has run, this time included.

    Not `attempts`: that keeps counting across retries a user asks for (it fences each
    attempt), while each such retry sends a new message with a fresh budget.
    """
    message = CurrentMessage.get_current_message()
    if message is None:
        return attempt
    return int(message.options.get("retries", 0)) + 1


def _public_error(exc: Exception) -> tuple[str, str]:
    """What a client may read of an unexpected failure: never a stack trace or a secret."""
    if isinstance(exc, UpstreamUnavailable):
        return "UPSTREAM_UNAVAILABLE", str(exc) or "The upstream provider is unavailable."
    return "PROCESSING_ERROR", "The job failed with an internal error."


def _fail(res: Resources, ctx: JobContext, code: str, message: str,
          status: int | None = None, retry_after_s: float | None = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if status is not None:
        error["status"] = status
    if retry_after_s is not None:
        # Lets the API answer a rate-limited upstream with its own Retry-After.
        error["retry_after_s"] = retry_after_s
    with res.autocommit.connect() as conn:
        done = conn.execute(*jobs_db.mark_failed(ctx.job_id, ctx.attempt, error)).first()
    if done is not None:
        res.events.publish(ctx.job_id, "failed", {"error": error}, terminal=True,
                           attempt=ctx.attempt)
        _webhook(done)


def _webhook(done: Any) -> None:
    if done.webhook_url:
        deliver_webhook.send(str(done.id))


def _ensure_terminal_event(res: Resources, job_id: str) -> None:
    """A worker may die between commit and publish; the redelivery publishes what was lost."""
    with res.autocommit.connect() as conn:
        row = conn.execute(*jobs_db.get_any(job_id)).first()
    if row is None or row.status not in ("succeeded", "failed"):
        return
    last = res.redis.xrevrange(res.keys.events(job_id), count=1)
    fields = last[0][1] if last else None
    if fields and fields.get(b"t") in (b"succeeded", b"failed", b"cancelled"):
        return
    data = {"result": row.result} if row.status == "succeeded" else {"error": row.error}
    res.events.publish(job_id, row.status, data, force=True, terminal=True)
