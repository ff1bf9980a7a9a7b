"""The job lifecycle every actor shares: claim, run one pipeline, record, publish.

An attempt claims the job with a conditional UPDATE; a job that is already finished or
cancelled is skipped, so a redelivered message never completes a job twice. The terminal
event is published after the commit, so a client that sees it and reads the job agrees.

Everything here runs on the worker process's event loop (workers/loop.py): claiming,
publishing and recording are awaited, never blocking a thread. Work that is synchronous
by nature (ingestion: CPU-bound parsing and embedding) runs in a thread and reports back
through `SyncJob`, whose calls hop onto the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dramatiq.middleware import CurrentMessage
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines.db import jobs as jobs_db
from pipelines.errors import DomainError, JobCancelled, UpstreamUnavailable
from pipelines.output_limits import check_result_size
from workers import job_metrics
from workers.resources import Resources, current
from workers.webhook_deliveries import fire
from workers.webhooks import deliver_webhook

log = logging.getLogger("switchyard.jobs")

_PROGRESS_INTERVAL_S = 0.5
TERMINAL_TYPES = (b"succeeded", b"failed", b"cancelled")

# Finishes a succeeded job: returns the row (id, webhook_url) if this attempt finished it.
Finish = Callable[[AsyncConnection, Any], Awaitable[Any]]


@dataclass(slots=True)
class Job:
    """What a pipeline sees of its job: the input, and ways to report back."""

    job_id: str
    attempt: int
    kind: str
    owner_id: str
    input: dict[str, Any]
    resources: Resources
    key_id: str | None = None
    # Replaces the plain "mark succeeded" UPDATE, for kinds whose success writes more rows
    # (a chat job's usage record and conversation reply) in the same statement.
    finish: Finish | None = None
    _last_progress_at: float = field(default=0.0)

    async def emit(self, type_: str, data: dict[str, Any]) -> bool:
        """Publish one event; True means the job was cancelled and the work should stop."""
        _, cancelled = await self.resources.aevents.publish(self.job_id, type_, data,
                                                            attempt=self.attempt)
        return cancelled

    async def is_cancelled(self) -> bool:
        """Whether this attempt was cancelled, for work that publishes nothing for a while."""
        return await self.resources.aevents.is_cancelled(self.job_id, self.attempt)

    async def progress(self, fraction: float, **data: Any) -> None:
        """Record progress (throttled), publish a `progress` event; raise if cancelled."""
        now = time.monotonic()
        if now - self._last_progress_at >= _PROGRESS_INTERVAL_S or fraction >= 1.0:
            self._last_progress_at = now
            async with self.resources.aautocommit.connect() as conn:
                await conn.execute(*jobs_db.set_progress(self.job_id, self.attempt, fraction))
        if await self.emit("progress", {"progress": round(fraction, 4), **data}):
            raise JobCancelled("The job was cancelled.")


class SyncJob:
    """A `Job` for synchronous work running in a thread: each call waits on the loop."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self._job = job
        self._loop = loop
        self.job_id, self.attempt, self.kind = job.job_id, job.attempt, job.kind
        self.owner_id, self.input, self.resources = job.owner_id, job.input, job.resources

    def emit(self, type_: str, data: dict[str, Any]) -> bool:
        return asyncio.run_coroutine_threadsafe(self._job.emit(type_, data),
                                                self._loop).result()

    def progress(self, fraction: float, **data: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._job.progress(fraction, **data),
                                         self._loop).result()


class Suspended(Exception):  # noqa: N818 - a signal from work, not an error
    """Raised by work whose job goes on in other jobs (a chain run, finished by its last
    step): the job stays `running`, nothing is published, and the sweeper leaves it alone
    for `hold_s` (past that, a redelivery finds the job as its work left it)."""

    def __init__(self, hold_s: float) -> None:
        super().__init__(f"suspended for up to {hold_s:.0f} s")
        self.hold_s = hold_s


Work = Callable[[Job], Awaitable[Any]]


async def run(job_id: str, work: Work) -> None:
    """Run one attempt of a job. Raises only for transient failures the broker should retry."""
    res = current()
    async with res.aautocommit.connect() as conn:
        # The claim records the attempt (this worker, from now) in the same statement.
        claimed = (await conn.execute(*jobs_db.mark_running(
            job_id, _this_worker(os.getpid())))).first()
    if claimed is None:
        await _ensure_terminal_event(res, job_id)
        return
    job = Job(job_id=job_id, attempt=claimed.attempts, kind=claimed.kind,
              owner_id=claimed.owner_id, input=claimed.input, resources=res,
              key_id=claimed.key_id)
    res.active_jobs += 1
    timer = job_metrics.AttemptTimer(job.kind, job.attempt)
    try:
        await _attempt(res, job, work)
    finally:
        res.active_jobs -= 1
        timer.done()


@functools.cache
def _this_worker(pid: int) -> jobs_db.Worker:
    """This process as its attempts name it (keyed by pid: a forked child is another)."""
    return jobs_db.Worker.this_process()


async def _end_attempt(res: Resources, job: Job, outcome: str,
                       error: dict[str, Any] | None = None) -> None:
    """Finish the attempt's row when the attempt ends without ending the job."""
    try:
        async with res.aautocommit.connect() as conn:
            await conn.execute(*jobs_db.end_attempt(job.job_id, job.attempt, outcome, error))
    except Exception:
        # A record for operators only: never let it change how the job itself goes.
        log.warning("could not record the end of attempt %d", job.attempt,
                    extra={"job_id": job.job_id}, exc_info=True)


async def _attempt(res: Resources, job: Job, work: Work) -> None:
    job_id = job.job_id
    if job.attempt > 1:
        # Tells followers to drop partial output: the next attempt starts from scratch.
        await job.emit("retry", {"attempt": job.attempt})
    if await job.emit("started", {"attempt": job.attempt}):
        await _end_attempt(res, job, "cancelled")
        return
    started = time.perf_counter()
    try:
        result = await work(job)
        # The result is stored in the row and carried whole by the terminal event.
        check_result_size(result, res.settings.max_result_bytes)
    except JobCancelled:
        log.info("job cancelled", extra={"job_id": job_id})
        job_metrics.cancelled(job.kind)
        await _end_attempt(res, job, "cancelled")
        return
    except Suspended as suspended:
        async with res.aautocommit.connect() as conn:
            await conn.execute(*jobs_db.hold(job_id, job.attempt, suspended.hold_s))
        return
    except DomainError as exc:
        await _fail(res, job, exc.code, exc.message, status=getattr(exc, "status", None),
                    retry_after_s=getattr(exc, "retry_after_s", None))
        return
    except Exception as exc:
        if _deliveries(job.attempt) >= res.settings.job_max_attempts:
            log.exception("job failed after %d attempts", job.attempt, extra={"job_id": job_id})
            await _fail(res, job, *_public_error(exc))
            return
        log.warning("job attempt %d failed, will retry: %r", job.attempt, exc,
                    extra={"job_id": job_id})
        code, message = _public_error(exc)
        await _end_attempt(res, job, "retried", {"code": code, "message": message,
                                                 "exception": type(exc).__name__})
        raise
    async with res.aautocommit.connect() as conn:
        if job.finish is not None:
            done = await job.finish(conn, result)
        else:
            done = (await conn.execute(*jobs_db.mark_succeeded(job_id, job.attempt,
                                                               result))).first()
    if done is not None:
        job_metrics.succeeded(job.kind)
        await res.aevents.publish(job_id, "succeeded", {"result": result}, terminal=True,
                                  attempt=job.attempt)
        await _webhook(res, job, done, result=result)
        log.debug("job succeeded in %.1f ms", (time.perf_counter() - started) * 1000,
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


async def _fail(res: Resources, job: Job, code: str, message: str,
                status: int | None = None, retry_after_s: float | None = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if status is not None:
        error["status"] = status
    if retry_after_s is not None:
        # Lets the API answer a rate-limited upstream with its own Retry-After.
        error["retry_after_s"] = retry_after_s
    async with res.aautocommit.connect() as conn:
        done = (await conn.execute(*jobs_db.mark_failed(job.job_id, job.attempt,
                                                        error))).first()
    if done is not None:
        job_metrics.failed(job.kind, code)
        await res.aevents.publish(job.job_id, "failed", {"error": error}, terminal=True,
                                  attempt=job.attempt)
        await _webhook(res, job, done, error=error)


async def _webhook(res: Resources, job: Job, done: Any, *, result: Any = None,
                   error: dict[str, Any] | None = None) -> None:
    """The job's own `webhook_url`, and its owner's subscriptions (job.succeeded or
    job.failed, and generation.done for a chat job or a completed agent turn)."""
    if done.webhook_url:
        # Dramatiq's enqueue is synchronous (a Redis round trip): off the loop.
        await asyncio.to_thread(deliver_webhook.send, str(done.id))
    data: dict[str, Any] = {"job_id": job.job_id, "kind": job.kind, "attempt": job.attempt}
    if error is not None:
        await fire(res, job.owner_id, [("job.failed", {**data, "status": "failed",
                                                       "error": error})])
        return
    events = [("job.succeeded", {**data, "status": "succeeded", "result": result})]
    generation = _generation(job, result)
    if generation is not None:
        events.append(("generation.done", {**data, **generation}))
    await fire(res, job.owner_id, events)


def _generation(job: Job, result: Any) -> dict[str, Any] | None:
    """What generation.done says of a succeeded job, if the job was a generation."""
    if not isinstance(result, dict):
        return None
    if job.kind == "chat":
        return {"model": result.get("model"), "content": result.get("content"),
                "finish_reason": result.get("finish_reason"), "usage": result.get("usage")}
    if job.kind == "agent" and result.get("status") == "completed":
        return {"session_id": result.get("session_id"), "content": result.get("output"),
                "finish_reason": result.get("stop_reason"), "usage": result.get("usage")}
    return None


async def _ensure_terminal_event(res: Resources, job_id: str, *,
                                 with_parent: bool = True) -> None:
    """A worker may die between commit and publish; the redelivery publishes what was lost.

    The parent's too: a child job may be what ended its parent (the last step of a chain
    run commits the run's end in its own transaction), and only the child's message is
    redelivered.
    """
    async with res.aautocommit.connect() as conn:
        row = (await conn.execute(*jobs_db.get_any(job_id))).first()
    if row is None or row.status not in ("succeeded", "failed"):
        return
    if with_parent and row.parent_id is not None:
        await _ensure_terminal_event(res, str(row.parent_id), with_parent=False)
    last = await res.aredis.xrevrange(res.keys.events(job_id), count=1)
    fields = last[0][1] if last else None
    if fields and fields.get(b"t") in TERMINAL_TYPES:
        return
    data = {"result": row.result} if row.status == "succeeded" else {"error": row.error}
    await res.aevents.publish(job_id, row.status, data, force=True, terminal=True)
