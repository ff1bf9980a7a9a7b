"""Chains: definitions (every PUT a new version), runs as `chain` jobs, and run records.

A run is answered as SSE in AI Studio's event names (`stream: true`, resumable with
`Last-Event-ID` through `GET /v1/jobs/{run_id}/events` or by re-POSTing nothing: the run id
is the job id) or as 202 with the job. Resume re-runs a failed or cancelled run's unfinished
steps (the same job, a new attempt); rerun starts a new run that reuses the outputs of every
position before the named prompt.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import int_query, json_response, parse, path_id
from api.context import Services, principal, services
from api.errors import ApiError
from api.formats.chain_events import ChainEventWriter
from api.job_control import cancel_job, retry_job, submit_job
from api.job_replies import event_stream
from api.job_stream import JobStream
from api.knowledge_access import search_groups
from api.limits import spend_job_allowance
from api.openapi import doc
from api.routes.jobs import job_read
from pipelines.chain_templates import ChainDefinitionInvalid, check_definition, check_inputs
from pipelines.chains import (
    ChainNotFound,
    ChainRunNotFound,
    prompts_by_id,
    results_of,
    run_usage,
    step_rows,
)
from pipelines.db import chains as chains_db
from pipelines.db import jobs as jobs_db
from pipelines.errors import Conflict, ModelNotFound, NotFound
from pipelines.events import is_valid_stream_id
from schemas.chains import (
    ChainCreate,
    ChainList,
    ChainRead,
    ChainRerunRequest,
    ChainResumeRequest,
    ChainRunList,
    ChainRunRead,
    ChainRunRequest,
    ChainRunSummary,
    ChainStepRead,
    ChainSummary,
)
from schemas.jobs import TERMINAL_EVENT_TYPES, Event, JobStatus

_MAX_PAGE = 100
# A run's stream may outlive its time limit a little: the TIMEOUT event comes from a worker.
_STREAM_MARGIN_S = 60.0


def _chain_id(request: Request) -> str:
    return path_id(request, "chain_id", ChainNotFound, "chain")


def _run_id(request: Request) -> str:
    return path_id(request, "run_id", ChainRunNotFound, "chain run")


def _summary(row: Row[Any]) -> ChainSummary:
    return ChainSummary(id=str(row.id), name=row.name, description=row.description,
                        status=row.status, version=row.version, promptCount=row.prompt_count,
                        created_at=row.created_at, updated_at=row.updated_at)


def _read(row: Row[Any]) -> ChainRead:
    return ChainRead(**dict(_summary(row)), input_fields=row.definition["input_fields"],
                     prompts=[{"id": pid, **p}
                              for pid, p in prompts_by_id(row.definition).items()])


async def _load_chain(svc: Services, owner_id: str, chain_id: str) -> Row[Any]:
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(chains_db.get_chain(chain_id, owner_id))).first()
    if row is None:
        raise ChainNotFound(f"No chain with id '{chain_id}'.")
    return row


async def _load_run(svc: Services, owner_id: str, run_id: str) -> Row[Any]:
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(chains_db.get_run(run_id, owner_id))).first()
    if row is None:
        raise ChainRunNotFound(f"No chain run with id '{run_id}'.")
    return row


async def _checked_body(request: Request, owner_id: str) -> ChainCreate:
    """A chain body within the configured limits, every template reference, model and
    knowledge base resolved: a chain that saves is a chain that can run."""
    svc = services(request)
    body = await parse(request, ChainCreate, svc.settings.max_json_body_bytes)
    settings = svc.settings
    if len(body.prompts) > settings.chain_max_prompts:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"A chain has at most {settings.chain_max_prompts} prompts; "
                       f"{len(body.prompts)} were given.", param="prompts",
                       details={"limit": "prompts", "max": settings.chain_max_prompts,
                                "found": len(body.prompts)})
    if len(body.input_fields) > settings.chain_max_input_fields:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"A chain has at most {settings.chain_max_input_fields} input fields; "
                       f"{len(body.input_fields)} were given.", param="input_fields",
                       details={"limit": "input_fields",
                                "max": settings.chain_max_input_fields,
                                "found": len(body.input_fields)})
    definition = body.definition()
    check_definition(definition["input_fields"], definition["prompts"])
    for prompt in body.prompts:
        try:
            # Exists is enough: a disabled model may be enabled again before the run.
            await svc.models.get(prompt.model)
        except ModelNotFound:
            raise ChainDefinitionInvalid(
                f"Prompt '{prompt.name}' uses model '{prompt.model}', which does not exist.",
                details={"prompt": prompt.name, "model": prompt.model}) from None
        if prompt.knowledge_ids:
            try:
                await search_groups(svc, owner_id, prompt.knowledge_ids)
            except NotFound as exc:
                raise ChainDefinitionInvalid(
                    f"Prompt '{prompt.name}': {exc.message}",
                    details={"prompt": prompt.name, **(exc.details or {})}) from None
    return body


@doc("Create a chain: input fields and prompts by position (same position: in parallel); "
     "every template reference is checked", body=ChainCreate, response=ChainRead, status=201,
     tags=["chains"])
async def create_chain(request: Request) -> Response:
    owner_id = principal(request).owner_id
    body = await _checked_body(request, owner_id)
    definition = body.definition()
    chain_id = chains_db.new_id()
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(chains_db.insert_chain(
            chain_id=chain_id, owner_id=owner_id, name=body.name, description=body.description,
            status=body.status, definition=definition,
            prompt_count=len(body.prompts)))).one()
        await conn.execute(chains_db.insert_version(chain_id, 1, definition))
    return json_response(_read(row), status=201)


def _cursor(request: Request) -> Any:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        return jobs_db.decode_cursor(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "VALIDATION_FAILED", "cursor is not valid.",
                       param="cursor") from None


def _status(request: Request, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get("status") or None
    if value is not None and value not in allowed:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"status must be one of {', '.join(allowed)}.", param="status")
    return value


@doc("Your chains, newest first, with promptCount; keyset-paged", response=ChainList,
     tags=["chains"], query={"status": "string", "limit": "integer", "cursor": "string"})
async def list_chains(request: Request) -> Response:
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    status = _status(request, ("draft", "published", "archived"))
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(chains_db.list_chains(
            principal(request).owner_id, limit=limit + 1, status=status,
            cursor=_cursor(request)))).all()
    page = rows[:limit]
    more = len(rows) > limit
    cursor = jobs_db.encode_cursor(page[-1].created_at, str(page[-1].id)) if more else None
    return json_response(ChainList(data=[_summary(r) for r in page], next_cursor=cursor))


@doc("A chain's current version", response=ChainRead, tags=["chains"])
async def get_chain(request: Request) -> Response:
    svc = services(request)
    return json_response(_read(await _load_chain(svc, principal(request).owner_id,
                                                 _chain_id(request))))


@doc("Replace a chain's definition: a new version (runs keep the one they ran)",
     body=ChainCreate, response=ChainRead, tags=["chains"])
async def update_chain(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    chain_id = _chain_id(request)
    await _load_chain(svc, owner_id, chain_id)
    body = await _checked_body(request, owner_id)
    definition = body.definition()
    async with svc.engine.begin() as conn:
        row = (await conn.execute(chains_db.update_chain(
            chain_id, owner_id, name=body.name, description=body.description,
            status=body.status, definition=definition,
            prompt_count=len(body.prompts)))).first()
        if row is None:
            raise ChainNotFound(f"No chain with id '{chain_id}'.")
        await conn.execute(chains_db.insert_version(chain_id, row.version, definition))
    return json_response(_read(row))


@doc("Delete a chain; its runs stay readable by id", status=204, tags=["chains"])
async def delete_chain(request: Request) -> Response:
    chain_id = _chain_id(request)
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(chains_db.delete_chain(
            chain_id, principal(request).owner_id))).first()
    if row is None:
        raise ChainNotFound(f"No chain with id '{chain_id}'.")
    return Response(status_code=204)


def _checked_inputs(svc: Services, definition: dict[str, Any],
                    inputs: dict[str, Any]) -> dict[str, Any]:
    settings = svc.settings
    size = len(orjson.dumps(inputs))
    if size > settings.chain_max_input_bytes:
        raise ApiError(413, "PAYLOAD_TOO_LARGE",
                       f"A run's inputs may hold {settings.chain_max_input_bytes:,} bytes; "
                       f"these hold {size:,}.", param="inputs",
                       details={"limit": "input_bytes", "max": settings.chain_max_input_bytes,
                                "found": size})
    return check_inputs(definition["input_fields"], inputs,
                        max_fields=settings.chain_max_input_fields)


async def _start(request: Request, *, chain_id: str, version: int, inputs: dict[str, Any],
                 stream: bool, steps: Any, rerun_of: str | None = None) -> Response:
    """Insert the run with its steps in the job's transaction, then answer (SSE or 202)."""
    svc = services(request)
    who = principal(request)
    job_id = jobs_db.new_job_id()

    async def on_submit(conn: AsyncConnection, run_id: str) -> None:
        await conn.execute(chains_db.insert_run(run_id=run_id, chain_id=chain_id,
                                                version=version, owner_id=who.owner_id,
                                                inputs=inputs, rerun_of=rerun_of))
        # Reused steps carry every column, new ones few: one INSERT per shape.
        shapes: dict[frozenset[str], list[dict[str, Any]]] = {}
        for row in steps(run_id):
            shapes.setdefault(frozenset(row), []).append(row)
        for rows in shapes.values():
            await conn.execute(chains_db.insert_steps(rows))

    async def submit() -> Any:
        row, _ = await submit_job(svc, kind="chain", owner_id=who.owner_id,
                                  input={"chain_id": chain_id, "version": version},
                                  key_id=who.key_id, on_submit=on_submit, job_id=job_id)
        return row

    if stream:
        return await _streamed(request, job_id, submit)
    row = await submit()
    return _accepted(row)


async def _streamed(request: Request, job_id: str, submit: Any) -> Response:
    svc = services(request)
    # Hanging up does not cancel a run: its record and result stay readable by id.
    stream = await JobStream.submit(
        svc.hub, svc.events, job_id, submit, keepalive_s=svc.settings.sse_keepalive_s,
        lifetime_s=svc.settings.chain_run_timeout_s + _STREAM_MARGIN_S)
    stream.watch_disconnect(request.receive)
    return event_stream(stream, ChainEventWriter())


def _accepted(row: Row[Any]) -> Response:
    job = job_read(row).model_dump(mode="json")
    run_id = str(row.id)
    job["links"]["run"] = f"/v1/chains/runs/{run_id}"
    return Response(orjson.dumps(job), status_code=202, media_type="application/json",
                    headers={"Location": f"/v1/chains/runs/{run_id}", "X-Job-ID": run_id})


@doc("Run a chain (a `chain` job): SSE with AI Studio's execution events if stream, "
     "else 202 with the job", body=ChainRunRequest, streams=True, status=202, tags=["chains"])
async def run_chain(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    chain = await _load_chain(svc, owner_id, _chain_id(request))
    body = await parse(request, ChainRunRequest, svc.settings.max_json_body_bytes)
    if chain.status == "archived":
        raise Conflict("This chain is archived; publish it or save it as a draft to run it.")
    inputs = _checked_inputs(svc, chain.definition, body.inputs)
    definition = chain.definition
    return await _start(request, chain_id=str(chain.id), version=chain.version, inputs=inputs,
                        stream=body.stream, steps=lambda run_id: step_rows(run_id, definition))


def _step_read(step: Row[Any]) -> ChainStepRead:
    tokens = None
    if step.prompt_tokens is not None or step.completion_tokens is not None:
        tokens = {"prompt": step.prompt_tokens or 0, "completion": step.completion_tokens or 0,
                  "total": (step.prompt_tokens or 0) + (step.completion_tokens or 0)}
    return ChainStepRead(
        id=str(step.id), prompt_id=step.prompt_id, name=step.name, position=step.position,
        status=step.status, job_id=str(step.job_id) if step.job_id else None, input=step.input,
        output=step.output, model=step.model, tokens=tokens,
        cost_usd=float(step.cost_usd) if step.cost_usd is not None else None,
        attempts=step.attempts, error=step.error, reused=step.reused, metadata=step.metadata,
        started_at=step.started_at, finished_at=step.finished_at, duration_ms=step.duration_ms)


def _run_summary(row: Row[Any]) -> ChainRunSummary:
    run_id = str(row.id)
    return ChainRunSummary(
        id=run_id, chain_id=str(row.chain_id), version=row.version, status=row.status,
        error=row.error, rerun_of=str(row.rerun_of) if row.rerun_of else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        links={"self": f"/v1/chains/runs/{run_id}", "job": f"/v1/jobs/{run_id}",
               "events": f"/v1/jobs/{run_id}/events"})


@doc("A chain's runs, newest first; keyset-paged", response=ChainRunList, tags=["chains"],
     query={"status": "string", "limit": "integer", "cursor": "string"})
async def list_runs(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    chain_id = _chain_id(request)
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    status = _status(request, tuple(JobStatus.__members__))
    await _load_chain(svc, owner_id, chain_id)
    async with svc.autocommit.connect() as conn:
        rows = (await conn.execute(chains_db.list_runs(
            chain_id, owner_id, limit=limit + 1, status=status,
            cursor=_cursor(request)))).all()
    page = rows[:limit]
    more = len(rows) > limit
    cursor = jobs_db.encode_cursor(page[-1].created_at, str(page[-1].id)) if more else None
    return json_response(ChainRunList(data=[_run_summary(r) for r in page], next_cursor=cursor))


@doc("A run: its version, inputs, status, and each step's input, output, tokens, cost, "
     "timings and attempts", response=ChainRunRead, tags=["chains"])
async def get_run(request: Request) -> Response:
    svc = services(request)
    run = await _load_run(svc, principal(request).owner_id, _run_id(request))
    async with svc.autocommit.connect() as conn:
        steps = (await conn.execute(chains_db.steps_of(str(run.id)))).all()
    usage = run_usage(steps)
    done = run.status == "succeeded"
    return json_response(ChainRunRead(
        **dict(_run_summary(run)), inputs=run.inputs, total_tokens=usage["total_tokens"],
        cost_usd=usage["cost_usd"], results=results_of(steps) if done else None,
        steps=[_step_read(s) for s in steps]))


async def _optional(request: Request, model: type[BaseModel]) -> Any:
    """A body that may be left out entirely (then every field's default)."""
    return await parse(request, model, services(request).settings.max_json_body_bytes,
                       allow_empty=True)


@doc("Resume a failed or cancelled run: finished steps are reused, the rest run again "
     "(SSE if stream, else 202)", body=ChainResumeRequest, streams=True, status=202,
     tags=["chains"])
async def resume_run(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    run = await _load_run(svc, owner_id, _run_id(request))
    body = await _optional(request, ChainResumeRequest)
    run_id = str(run.id)
    if run.status not in ("failed", "cancelled"):
        raise Conflict(f"Only failed or cancelled runs can be resumed; this one is "
                       f"{run.status}.")
    await spend_job_allowance("chain")

    async def submit() -> Any:
        row = await retry_job(svc, run_id, owner_id)
        if row is None:
            raise Conflict("The run is no longer failed or cancelled.")
        return row

    if body.stream:
        return await _streamed(request, run_id, submit)
    return _accepted(await submit())


@doc("Start a new run that reuses the outputs of every position before `from_prompt`, "
     "with the same or changed inputs (SSE if stream, else 202)", body=ChainRerunRequest,
     streams=True, status=202, tags=["chains"])
async def rerun(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    run = await _load_run(svc, owner_id, _run_id(request))
    body = await parse(request, ChainRerunRequest, svc.settings.max_json_body_bytes)
    async with svc.autocommit.connect() as conn:
        definition = dict((await conn.execute(chains_db.get_version(
            str(run.chain_id), run.version))).scalar_one())
        old_steps = (await conn.execute(chains_db.steps_of(str(run.id)))).all()
    target = next((s for s in old_steps if s.name == body.from_prompt
                   or (isinstance(body.from_prompt, int) and s.prompt_id == body.from_prompt)),
                  None)
    if target is None:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"The run's chain has no prompt '{body.from_prompt}'.",
                       param="from_prompt")
    earlier = [s for s in old_steps if s.position < target.position]
    unfinished = [s.name for s in earlier if s.status not in chains_db.DONE]
    if unfinished:
        raise Conflict(f"Prompt '{unfinished[0]}' before '{target.name}' has no output to "
                       "reuse; resume the run instead.")
    inputs = _checked_inputs(svc, definition,
                             body.inputs if body.inputs is not None else dict(run.inputs))

    def steps(run_id: str) -> list[dict[str, Any]]:
        fresh = {row["prompt_id"]: row for row in step_rows(run_id, definition)}
        for step in earlier:
            fresh[step.prompt_id] = chains_db.copy_step(step, run_id)
        return list(fresh.values())

    return await _start(request, chain_id=str(run.chain_id), version=run.version,
                        inputs=inputs, stream=body.stream, steps=steps, rerun_of=str(run.id))


@doc("Follow a run in AI Studio's event names; resumes after Last-Event-ID (header or "
     "last_event_id query)", streams=True, tags=["chains"])
async def run_events(request: Request) -> Response:
    svc = services(request)
    run = await _load_run(svc, principal(request).owner_id, _run_id(request))
    after = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if after is not None and not is_valid_stream_id(after):
        raise ApiError(400, "VALIDATION_FAILED", "Last-Event-ID is not an event id of this run.")
    owner_id = principal(request).owner_id

    async def stand_in() -> Event | None:
        """A run whose log expired ends at once, with an end made from its job row."""
        row = await _load_run(svc, owner_id, str(run.id))
        if row.status not in TERMINAL_EVENT_TYPES:
            return None
        millis = int(row.finished_at.timestamp() * 1000) if row.finished_at else 0
        data = {"result": row.result} if row.status == "succeeded" else {"error": row.error}
        return Event(id=f"{millis}-0", job_id=str(row.id), seq=0, type=row.status, data=data)

    stream = await JobStream.resume(svc.hub, svc.events, str(run.id), after=after,
                                    stand_in=stand_in,
                                    keepalive_s=svc.settings.sse_keepalive_s,
                                    lifetime_s=svc.settings.max_sse_lifetime_s)
    stream.watch_disconnect(request.receive)
    return event_stream(stream, ChainEventWriter())


@doc("Cancel a run: every running step stops within one token", tags=["chains"])
async def cancel_run(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    run = await _load_run(svc, owner_id, _run_id(request))
    row = await cancel_job(svc, str(run.id), owner_id, "requested")
    if row is None:
        raise Conflict(f"The run is already {run.status}.")
    return json_response(job_read(row))


routes = [
    Route("/v1/chains", create_chain, methods=["POST"]),
    Route("/v1/chains", list_chains, methods=["GET"]),
    Route("/v1/chains/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/chains/runs/{run_id}/resume", resume_run, methods=["POST"]),
    Route("/v1/chains/runs/{run_id}/rerun", rerun, methods=["POST"]),
    Route("/v1/chains/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/v1/chains/runs/{run_id}/events", run_events, methods=["GET"]),
    Route("/v1/chains/{chain_id}", get_chain, methods=["GET"]),
    Route("/v1/chains/{chain_id}", update_chain, methods=["PUT"]),
    Route("/v1/chains/{chain_id}", delete_chain, methods=["DELETE"]),
    Route("/v1/chains/{chain_id}/run", run_chain, methods=["POST"]),
    Route("/v1/chains/{chain_id}/runs", list_runs, methods=["GET"]),
]
