"""Chain runs: positions dispatched as step jobs, and each step's end recorded exactly once.

No coroutine ever waits for another job. A run's `chain` job renders the first unfinished
position, inserts one `chain_step` job per prompt there (children of the run, in the same
transaction as the step rows), enqueues them after the commit and suspends. Each step, when
it ends, takes the run's job row lock and records its output with conditional UPDATEs (a
redelivered or stale step matches nothing); the step that finishes a position dispatches the
next one, or finishes the run. A failure (on_error: fail) or the run's time limit fails the
run and raises its cancel flag, so every sibling stops within one token.

Every event of a run, the steps' included, is published on the run's own log with the run
job's attempt, in AI Studio's names: `execution_started`, `prompt_started`, `prompt_chunk`,
`prompt_complete`, then `execution_complete` or `execution_failed`, then the job's
terminal event. The events that must precede the run's end (`prompt_complete`,
`execution_complete`, `execution_failed`) are published while the lock is held, so no
sibling's can come after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipelines.chain_templates import render
from pipelines.db import chains as chains_db
from pipelines.db import jobs as jobs_db
from pipelines.errors import InvalidInput, JobCancelled, NotFound
from pipelines.events import AsyncEventLog
from pipelines.output_limits import check_result_size

# Sends step jobs by id once their rows are committed.
SendSteps = Callable[[Sequence[str]], Awaitable[None]]
# Called with the run job's (id, webhook_url) row when a step ends the run.
RunEnded = Callable[[Any], Awaitable[None]]

TIMEOUT = "TIMEOUT"


class ChainNotFound(NotFound): ...


class ChainRunNotFound(NotFound): ...


@dataclass(slots=True)
class RunHandle:
    """A run as the job that runs it (or one of its steps) knows it."""

    run_id: str
    events: AsyncEventLog
    attempt: int

    async def emit(self, type_: str, data: dict[str, Any], *, force: bool = False) -> bool:
        """Publish on the run's log as its current attempt; True if the run was cancelled."""
        _, cancelled = await self.events.publish(self.run_id, type_, data, force=force,
                                                 attempt=self.attempt)
        return cancelled


def prompts_by_id(definition: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """A version's prompts by id: their 1-based order in the definition (AI Studio's
    `promptId`), stable for the version's life."""
    return {index: dict(prompt) for index, prompt in enumerate(definition["prompts"], 1)}


def step_rows(run_id: str, definition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One pending step row per prompt of a new run."""
    return [{"id": chains_db.new_id(), "run_id": run_id, "prompt_id": prompt_id,
             "name": prompt["name"], "position": int(prompt["position"]), "status": "pending"}
            for prompt_id, prompt in prompts_by_id(definition).items()]


def results_of(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """The `execution_complete` results: every prompt's output, in position order."""
    return [{"promptId": s.prompt_id, "name": s.name, "position": s.position,
             "status": s.status, "output": s.output or "", "metadata": step_metadata(s)}
            for s in sorted(steps, key=lambda s: (s.position, s.prompt_id))]


def step_metadata(step: Any) -> dict[str, Any]:
    """`prompt_complete`'s metadata: model, tokens, duration and cost (AI Studio's fields)."""
    meta: dict[str, Any] = {
        "model": step.model,
        "tokens": (step.prompt_tokens or 0) + (step.completion_tokens or 0),
        "prompt_tokens": step.prompt_tokens or 0,
        "completion_tokens": step.completion_tokens or 0,
        "duration_ms": step.duration_ms,
        "cost": float(step.cost_usd or 0),
    }
    extra = step.metadata or {}
    if extra.get("sources") is not None:
        meta["sources"] = extra["sources"]
    if step.error is not None:
        meta["error"] = step.error
    if step.reused:
        meta["reused"] = True
    return meta


def run_usage(steps: Sequence[Any]) -> dict[str, Any]:
    """Tokens and cost of the steps this run ran (reused steps were paid for by their run)."""
    mine = [s for s in steps if not s.reused]
    tokens = sum((s.prompt_tokens or 0) + (s.completion_tokens or 0) for s in mine)
    cost = sum((Decimal(s.cost_usd or 0) for s in mine), Decimal(0))
    return {"total_tokens": tokens, "cost_usd": float(cost)}


async def dispatch_next(conn: AsyncConnection, run: Any, definition: Mapping[str, Any],
                        steps: Sequence[Any], *, owner_id: str,
                        key_id: str | None) -> list[str] | None:
    """Queue the first position that has unfinished steps; the new step jobs' ids, or None
    when every step is done. Steps already queued or running are left to their jobs."""
    open_steps = [s for s in steps if s.status not in chains_db.DONE]
    if not open_steps:
        return None
    position = min(s.position for s in open_steps)
    values: dict[str, Any] = dict(run.inputs)
    values.update({s.name: s.output or "" for s in steps if s.status in chains_db.DONE})
    prompts = prompts_by_id(definition)
    sent: list[str] = []
    for step in open_steps:
        if step.position != position or step.status in ("queued", "running"):
            continue
        prompt = prompts[step.prompt_id]
        job_id = jobs_db.new_job_id()
        system = prompt.get("system_prompt")
        job_input = {"run_id": str(run.id), "step_id": str(step.id),
                     "system_prompt": render(system, values) if system else None}
        await conn.execute(chains_db.dispatch_step(
            str(step.id), render(prompt["template"], values), job_id=job_id,
            owner_id=owner_id, key_id=key_id, job_input=job_input))
        sent.append(job_id)
    return sent


async def _steps(conn: AsyncConnection, run_id: str) -> list[Any]:
    return list((await conn.execute(chains_db.steps_of(run_id))).all())


async def _stop_steps(conn: AsyncConnection, run_id: str) -> None:
    for job_id in (await conn.execute(chains_db.stop_active_steps(run_id))).scalars():
        if job_id is not None:
            await conn.execute(chains_db.cancel_step_job(str(job_id)))


async def start_run(db: AsyncEngine, run: RunHandle, *, owner_id: str, key_id: str | None,
                    cancel_ttl_s: int, max_result_bytes: int,
                    send: SendSteps) -> dict[str, Any] | None:
    """One attempt of a run: dispatch its first unfinished position. Returns None when the
    run goes on in its steps, or the run's result when nothing was left to run.

    A new attempt (a resume, or a redelivery) fences off every step of earlier attempts:
    their publishes are refused (the cancel flag at the previous attempt) and their jobs are
    cancelled; unfinished steps are dispatched afresh and finished ones are reused.
    """
    if run.attempt > 1:
        await run.events.request_cancel(run.run_id, run.attempt - 1, cancel_ttl_s)
    async with db.begin() as conn:
        row = (await conn.execute(chains_db.lock_run(run.run_id, with_definition=True))).first()
        if row is None:
            raise InvalidInput("This chain run has no record; start it with "
                               "POST /v1/chains/{id}/run.")
        if row.status != "running" or row.attempts != run.attempt:
            # Cancelled (or taken over by a later attempt) since this attempt claimed it.
            raise JobCancelled("The chain run ended before it started.")
        definition = dict(row.definition)
        if run.attempt > 1:
            # A first attempt has no earlier one whose steps it must fence off or reset
            # (a resume is a later attempt of the same job; a rerun is a new run).
            await _stop_steps(conn, run.run_id)
            await conn.execute(chains_db.reset_unfinished_steps(run.run_id))
        steps = await _steps(conn, run.run_id)
        await run.emit("execution_started", {"executionId": run.run_id,
                                             "totalPrompts": len(steps),
                                             "version": row.version, "attempt": run.attempt})
        sent = await dispatch_next(conn, row, definition, steps, owner_id=owner_id,
                                   key_id=key_id)
        if sent is None:
            result = _run_result(run.run_id, steps, max_result_bytes)
            await run.emit("execution_complete", {"results": result["results"]})
            return result
    await send(sent)
    return None


def _run_result(run_id: str, steps: Sequence[Any], max_result_bytes: int) -> dict[str, Any]:
    result = {"executionId": run_id, "results": results_of(steps), **run_usage(steps)}
    check_result_size(result, max_result_bytes)
    return result


@dataclass(slots=True)
class StepOutcome:
    """How a step ended: its output (or the default one) with usage, or its error."""

    status: str  # succeeded | defaulted | failed
    output: str | None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: Decimal | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    input: str | None = None


async def settle_step(db: AsyncEngine, run_id: str, events: AsyncEventLog, step: Any,
                      job_id: str, job_attempt: int, outcome: StepOutcome, *,
                      definition: Mapping[str, Any],
                      record_job: Callable[[AsyncConnection], Awaitable[Any]],
                      owner_id: str, key_id: str | None, cancel_ttl_s: int,
                      max_result_bytes: int, send: SendSteps,
                      on_run_end: RunEnded) -> Any:
    """Record a step's end and move the run on, in one transaction under the run's lock.

    `definition` is the run's version (the step read it when it started).
    `record_job(conn)` ends the step's own job (with its usage record) and returns its row,
    or None when this attempt no longer owns the job: then nothing is recorded at all.
    Returns that row (None: this attempt was stale).
    """
    finished: Any = None
    failed_error: dict[str, Any] | None = None
    failed_row: Any = None
    sent: list[str] = []
    async with db.begin() as conn:
        run = (await conn.execute(chains_db.finish_step(
            run_id, str(step.id), job_id, job_attempt, status=outcome.status,
            output=outcome.output, model=outcome.model, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, cost_usd=outcome.cost_usd,
            error=outcome.error, metadata=outcome.metadata, input=outcome.input))).first()
        if run is None or run.status != "running" or not run.finished:
            await conn.rollback()
            return None
        handle = RunHandle(run_id, events, run.attempts)
        done = await record_job(conn)
        if done is None:
            await conn.rollback()
            return None
        steps = await _steps(conn, run_id)
        mine = next(s for s in steps if str(s.id) == str(step.id))
        if outcome.status == "failed":
            failed_error = {**(outcome.error or {}), "prompt_id": step.prompt_id,
                            "prompt": step.name}
            failed_row = (await conn.execute(*jobs_db.mark_failed(run_id, run.attempts,
                                                                  failed_error))).first()
            await _stop_steps(conn, run_id)
            await events.request_cancel(run_id, run.attempts, cancel_ttl_s)
            await handle.emit("execution_failed", {"error": failed_error,
                                                   "promptId": step.prompt_id,
                                                   "recoverable": True}, force=True)
        else:
            await handle.emit("prompt_complete", {"promptId": step.prompt_id,
                                                  "output": mine.output or "",
                                                  "metadata": step_metadata(mine)})
            at_position = [s for s in steps if s.position == step.position]
            if all(s.status in chains_db.DONE for s in at_position):
                next_jobs = await dispatch_next(conn, run, definition, steps,
                                                owner_id=owner_id, key_id=key_id)
                if next_jobs is None:
                    result = _run_result(run_id, steps, max_result_bytes)
                    finished = (await conn.execute(*jobs_db.mark_succeeded(
                        run_id, run.attempts, result))).first()
                    if finished is not None:
                        await handle.emit("execution_complete", {"results": result["results"]})
                        finished = (finished, result, run.attempts)
                else:
                    sent = next_jobs
    if failed_error is not None:
        await events.publish(run_id, "failed", {"error": failed_error}, force=True,
                             terminal=True)
        await on_run_end(failed_row)
    if sent:
        await send(sent)
    if finished is not None:
        row, result, attempt = finished
        await events.publish(run_id, "succeeded", {"result": result}, terminal=True,
                             attempt=attempt)
        await on_run_end(row)
    return done


async def expire_run(db: AsyncEngine, events: AsyncEventLog, run_id: str, attempt: int,
                     limit_s: float, cancel_ttl_s: int) -> Any:
    """Fail the run with TIMEOUT if `attempt` is still running; its (id, webhook_url) row or
    None. Safe to re-run: a run that ended, or moved on to a later attempt, is left alone."""
    error = {"code": TIMEOUT, "message": f"The chain run did not finish within "
                                         f"{limit_s:g} seconds."}
    async with db.begin() as conn:
        run = (await conn.execute(chains_db.lock_run(run_id))).first()
        if run is None or run.status != "running" or run.attempts != attempt:
            return None
        done = (await conn.execute(*jobs_db.mark_failed(run_id, attempt, error))).first()
        running = [s for s in await _steps(conn, run_id) if s.status in ("queued", "running")]
        await _stop_steps(conn, run_id)
        await events.request_cancel(run_id, attempt, cancel_ttl_s)
        await events.publish(run_id, "execution_failed", {
            "error": error, "promptId": running[0].prompt_id if running else None,
            "recoverable": True}, force=True, attempt=attempt)
    await events.publish(run_id, "failed", {"error": error}, force=True, terminal=True)
    return done


async def stop_step(db: AsyncEngine, events: AsyncEventLog, step_id: str, job_id: str) -> None:
    """A step whose run ended (or that was re-dispatched to another job): its row (if still
    this job's) and its job end cancelled, so no sweeper sends it again."""
    async with db.begin() as conn:
        cancelled = (await conn.execute(chains_db.cancel_step_job(job_id))).first()
        await conn.execute(chains_db.cancel_step(step_id, job_id))
    if cancelled is not None:
        await events.publish(job_id, "cancelled", {"reason": "the chain run ended"},
                             force=True, terminal=True)
