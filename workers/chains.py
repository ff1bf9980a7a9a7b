"""Chain actors: a run dispatches its positions, each step is a chat on any worker.

`run_chain` never waits for its steps: it dispatches the first unfinished position and
suspends (workers/jobs.py `Suspended`); the step that ends the last position finishes the
run (pipelines/chains.py). `expire_chain_run` is a delayed message on the `chains` queue
that fails a run still going at its time limit, so no coroutine sleeps for it either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import dramatiq
from dramatiq import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from pipelines import chat, retrieve
from pipelines.budgets import budget_id, record_tokens
from pipelines.chain_templates import render
from pipelines.chains import (
    RunHandle,
    StepOutcome,
    expire_run,
    prompts_by_id,
    settle_step,
    start_run,
    stop_step,
)
from pipelines.db import chains as chains_db
from pipelines.db import jobs as jobs_db
from pipelines.db import knowledge as knowledge_db
from pipelines.db.outcomes import chat_succeeded
from pipelines.embedders.registry import EmbeddingSpec
from pipelines.errors import DomainError, InvalidInput, JobCancelled, UpstreamUnavailable
from pipelines.models import output_token_limit
from pipelines.usage import local_usage
from schemas.chains import ChainRunJob, ChainStepJob
from schemas.jobs import JOB_ROUTES
from workers.actors import job_actor
from workers.jobs import Job, Suspended
from workers.resources import Resources, current
from workers.webhooks import deliver_webhook

log = logging.getLogger("switchyard.chains")

_EXPIRY_ACTOR = "expire_chain_run"
# Past the run's time limit, the sweeper may send a run job whose expiry message was lost.
_HOLD_GRACE_S = 120.0
_REQUEST_FIELDS = ("max_tokens", "temperature", "dev_options")


@job_actor("chain")
async def run_chain(job: Job, spec: ChainRunJob) -> dict[str, Any]:
    """Publishes started, execution_started, then suspends while its steps run (they publish
    the prompt events and the run's end). Safe to re-run: a new attempt fences off the steps
    of earlier ones and re-dispatches only unfinished steps."""
    res = job.resources
    limit_s = res.settings.chain_run_timeout_s
    result = await start_run(res.aengine, RunHandle(job.job_id, res.aevents, job.attempt),
                             owner_id=job.owner_id, key_id=job.key_id,
                             cancel_ttl_s=res.settings.event_stream_ttl_s,
                             max_result_bytes=res.settings.max_result_bytes, send=_send_steps)
    if result is not None:
        return result
    await asyncio.to_thread(expire_chain_run.send_with_options, args=(job.job_id, job.attempt),
                            delay=int(limit_s * 1000))
    raise Suspended(limit_s + max(_HOLD_GRACE_S, res.settings.sweeper_stale_after_s))


@dramatiq.actor(actor_name=_EXPIRY_ACTOR, queue_name=JOB_ROUTES["chain"].queue_name,
                max_retries=5)
async def expire_chain_run(run_id: str, attempt: int) -> None:
    """Fails the run with TIMEOUT (execution_failed, failed) if that attempt still runs;
    safe to re-run."""
    res = current()
    done = await expire_run(res.aengine, res.aevents, run_id, attempt,
                            res.settings.chain_run_timeout_s, res.settings.event_stream_ttl_s)
    await _run_ended(done)


@job_actor("chain_step")
async def run_chain_step(job: Job, spec: ChainStepJob) -> dict[str, Any]:
    """Publishes prompt_started (again on every try, with its attempt number, so followers
    drop that prompt's partial text), prompt_chunk…, then prompt_complete — all on the run's
    log. Safe to re-run: the step's end is recorded by the attempt that owns it, once."""
    res = job.resources
    async with res.aautocommit.connect() as conn:
        step = (await conn.execute(chains_db.claim_step(
            spec.step_id, spec.run_id, job.job_id, job.attempt, job.owner_id))).first()
    if step is None or step.owner_id != job.owner_id:
        raise InvalidInput("This step belongs to no run of its owner.")
    if step.claimed_attempts is None:
        await stop_step(res.aengine, res.aevents, spec.step_id, job.job_id)
        raise JobCancelled("The chain run ended.")
    definition = dict(step.definition)
    prompt = prompts_by_id(definition)[step.prompt_id]
    run_handle = RunHandle(spec.run_id, res.aevents, step.run_attempts)
    attempt_no = int(step.claimed_attempts)
    error: dict[str, Any] = {}
    outcome: StepOutcome | None = None
    for try_no in range(int(prompt.get("retries", 0)) + 1):
        if try_no:
            async with res.aautocommit.connect() as conn:
                bumped = (await conn.execute(chains_db.count_attempt(
                    spec.step_id, job.job_id, job.attempt))).first()
            if bumped is None:
                break
            attempt_no = int(bumped.attempts)
        try:
            if await run_handle.emit("prompt_started", {
                    "promptId": step.prompt_id, "position": step.position, "name": step.name,
                    "attempt": attempt_no}):
                raise JobCancelled("The chain run was cancelled.")
            outcome = await asyncio.wait_for(
                _answer(res, job, step, prompt, spec, run_handle),
                timeout=prompt.get("timeout_s"))
            break
        except JobCancelled:
            await stop_step(res.aengine, res.aevents, spec.step_id, job.job_id)
            raise
        except TimeoutError:
            error = {"code": "STEP_TIMEOUT",
                     "message": f"Prompt '{step.name}' took longer than its "
                                f"{prompt.get('timeout_s')} s."}
        except DomainError as exc:
            error = {"code": exc.code, "message": exc.message}
        except UpstreamUnavailable as exc:
            error = {"code": "UPSTREAM_UNAVAILABLE",
                     "message": str(exc) or "The upstream provider is unavailable."}
        except Exception:
            log.exception("chain step %s failed", spec.step_id)
            error = {"code": "PROCESSING_ERROR", "message": "The step failed with an internal "
                                                            "error."}
    if outcome is None:
        continues = prompt.get("on_error") == "continue"
        outcome = StepOutcome(status="defaulted" if continues else "failed",
                              output=prompt.get("default_output", "") if continues else None,
                              error=error or {"code": "PROCESSING_ERROR",
                                              "message": "The step did not run."})
    job.finish = _finisher(job, step, definition, outcome)
    return {"status": outcome.status, "output": outcome.output, "error": outcome.error}


async def _answer(res: Resources, job: Job, step: Any, prompt: dict[str, Any],
                  spec: ChainStepJob, run: RunHandle) -> StepOutcome:
    """Retrieve (if the prompt has knowledge_ids), then stream the chat onto the run's log."""
    rendered = str(step.input or "")
    metadata: dict[str, Any] = {}
    if prompt.get("knowledge_ids"):
        context, sources = await _retrieve(res, job.owner_id, prompt, rendered)
        rendered = render(rendered, {"context": context})
        metadata["sources"] = sources
    messages: list[dict[str, Any]] = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": rendered})
    request: dict[str, Any] = {"model": prompt["model"], "messages": messages, "stream": True}
    for name in _REQUEST_FIELDS:
        if prompt.get(name) is not None:
            request[name] = prompt[name]
    models = await res.models.chain(prompt["model"])
    by_id = {info.id: info for info in models}

    def request_for(model_id: str) -> dict[str, Any]:
        info = by_id[model_id]
        limit = output_token_limit(info, request)
        if info.provider == "dev" or limit is None or request.get("max_tokens") == limit:
            return request
        return {**request, "max_tokens": limit}

    async def emit(type_: str, data: dict[str, Any]) -> bool:
        if type_ == "delta" and data.get("text"):
            return await run.emit("prompt_chunk", {"promptId": step.prompt_id,
                                                   "content": data["text"]})
        return False

    result = await chat.complete_with_fallbacks(
        [(info.id, res.chat_models.get(info)) for info in models], request, emit,
        request_for=request_for,
        flush_ms=chat.flush_window_ms(res.settings.stream_flush_ms,
                                      res.settings.stream_flush_max_ms, res.active_jobs),
        count_tokens=local_usage)
    answered = by_id[result["model"]]
    usage = result["usage"]
    prompt_tokens, completion_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    if res.settings.daily_token_budget > 0:
        await record_tokens(res.aredis, res.keys, budget_id(job.key_id, job.owner_id),
                            usage["total_tokens"])
    metadata["provider"] = answered.provider
    metadata["chat"] = {k: result.get(k) for k in ("duration_ms", "ttft_ms", "finish_reason")}
    return StepOutcome(status="succeeded", output=str(result["content"] or ""),
                       model=answered.id, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens,
                       cost_usd=answered.cost_usd(prompt_tokens, completion_tokens),
                       metadata=metadata, input=rendered)


async def _retrieve(res: Resources, owner_id: str, prompt: dict[str, Any],
                    rendered: str) -> tuple[str, list[dict[str, Any]]]:
    settings = prompt.get("retrieval") or {}
    query = str(settings.get("query") or rendered).replace("{{context}}", "").strip()
    async with res.aautocommit.connect() as conn:
        bases = (await conn.execute(knowledge_db.readable_bases(
            list(prompt["knowledge_ids"]), owner_id))).all()
    if not bases:
        return "", []
    groups: dict[EmbeddingSpec, list[str]] = {}
    for base in bases:
        spec = EmbeddingSpec(base.embedding_provider, base.embedding_model,
                             base.embedding_dimension)
        groups.setdefault(spec, []).append(str(base.id))
    mode = str(settings.get("mode") or "hybrid")
    vectors: dict[EmbeddingSpec, list[float]] = {}
    if mode != "keyword":
        for spec in groups:
            embedder = res.embedders.get(spec)
            vectors[spec] = (await asyncio.to_thread(embedder.embed, [query]))[0]
    hits = await retrieve.search(res.aengine, groups, query, vectors, mode=mode,
                                 limit=int(settings.get("limit") or 5),
                                 filters={"tags": None, "document_types": None,
                                          "document_ids": None, "metadata": None})
    context = "\n\n".join(f"[{i}] {hit.title or hit.filename or ''}\n{hit.content}".strip()
                          for i, hit in enumerate(hits, 1))
    sources = [{"chunk_id": h.chunk_id, "document_id": h.document_id,
                "knowledge_id": h.knowledge_id, "title": h.title or h.filename,
                "page": h.page, "score": h.score} for h in hits]
    return context, sources


def _finisher(job: Job, step: Any, definition: dict[str, Any], outcome: StepOutcome) -> Any:
    """The step job's end, written with the step's record and the run's move (one
    transaction); a failed step job publishes its own `failed` here."""
    res = job.resources

    async def record(conn: AsyncConnection) -> Any:
        if outcome.status == "succeeded":
            result = {"content": outcome.output, "model": outcome.model,
                      "usage": {"prompt_tokens": outcome.prompt_tokens,
                                "completion_tokens": outcome.completion_tokens,
                                "total_tokens": (outcome.prompt_tokens or 0)
                                + (outcome.completion_tokens or 0)},
                      "cost_usd": float(outcome.cost_usd or 0)}
            return (await conn.execute(*chat_succeeded(
                job_id=job.job_id, attempt=job.attempt, result=result, owner_id=job.owner_id,
                key_id=job.key_id, model=str(outcome.model),
                provider=str((outcome.metadata or {}).get("provider", "unknown")),
                cost_usd=outcome.cost_usd or Decimal(0)))).first()
        return (await conn.execute(*jobs_db.mark_failed(job.job_id, job.attempt,
                                                        outcome.error or {}))).first()

    async def finish(_conn: AsyncConnection, _result: Any) -> Any:
        done = await settle_step(
            res.aengine, str(step.run_id), res.aevents, step, job.job_id, job.attempt, outcome,
            definition=definition, record_job=record, owner_id=job.owner_id, key_id=job.key_id,
            cancel_ttl_s=res.settings.event_stream_ttl_s,
            max_result_bytes=res.settings.max_result_bytes, send=_send_steps,
            on_run_end=_run_ended)
        if done is None:
            await stop_step(res.aengine, res.aevents, str(step.id), job.job_id)
            return None
        if outcome.status != "succeeded":
            await res.aevents.publish(job.job_id, "failed", {"error": outcome.error},
                                      terminal=True, attempt=job.attempt)
            return None
        return done

    return finish


async def _send_steps(job_ids: Sequence[str]) -> None:
    """Enqueue committed step jobs; a failure is left to the sweeper (they stay queued)."""
    if not job_ids:
        return
    route = JOB_ROUTES["chain_step"]
    broker = dramatiq.get_broker()

    def send() -> None:
        for job_id in job_ids:
            broker.enqueue(Message(queue_name=route.queue_name, actor_name=route.actor_name,
                                   args=(job_id,), kwargs={}, options={}))

    started = time.perf_counter()
    try:
        await asyncio.to_thread(send)
    except Exception:
        log.exception("enqueue of %d chain steps failed; the sweeper will send them",
                      len(job_ids))
        return
    log.debug("sent %d chain steps in %.1f ms", len(job_ids),
              (time.perf_counter() - started) * 1000)


async def _run_ended(row: Any) -> None:
    if row is not None and row.webhook_url:
        await asyncio.to_thread(deliver_webhook.send, str(row.id))
