"""Turns of an agent session: a message starts one (an `agent` job), tool results resume
one that stopped with `requires_action`, approvals one that stopped with
`approval_required`, and its events stream as SSE (resumable with `Last-Event-ID`). The
user's message (or the client's answer) is written in the job's own transaction, with the
session row locked, so two turns of one session never overlap. `WS /v1/ws/chat` starts
turns through `turn_submitter` too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import json_response, parse
from api.context import Principal, Services, principal, services
from api.errors import ApiError
from api.formats.agent_events import AgentEventWriter
from api.job_control import submit_job
from api.job_replies import event_stream
from api.job_stream import JobStream
from api.openapi import doc
from api.routes.agents import load_agent, load_session, session_id_of, session_read
from api.routes.jobs import job_read
from pipelines.agent_items import AgentSessionNotFound, pending_calls, tool_named
from pipelines.db import agents as agents_db
from pipelines.db import jobs as jobs_db
from pipelines.errors import Conflict
from pipelines.events import is_valid_stream_id
from schemas.agents import ApprovalCreate, MessageCreate, ToolResultCreate

_STREAM_MARGIN_S = 60.0
_LIVE_JOB = ("queued", "running")


async def _locked_idle(conn: AsyncConnection, session_id: str, owner_id: str,
                       expect: str) -> Row[Any]:
    """The session, locked; Conflict unless it is in state `expect` (a `running` session
    whose job already ended counts as idle: a failed turn leaves the session usable)."""
    row = (await conn.execute(agents_db.lock_session(session_id, owner_id))).first()
    if row is None:
        raise AgentSessionNotFound(f"No agent session with id '{session_id}'.")
    status = row.status
    if status == "running" and row.last_job_id is not None:
        job = (await conn.execute(*jobs_db.get_any(str(row.last_job_id)))).first()
        if job is None or job.status not in _LIVE_JOB:
            status = "idle"
    if status != expect:
        if status == "requires_approval":
            raise Conflict("The session waits for tool approvals (POST …/approvals).")
        if status == "requires_action":
            raise Conflict("The session waits for tool results (POST …/tool_results).")
        if status == "running":
            raise Conflict("A turn of this session is still running.")
        raise Conflict("The session has no turn waiting for this answer.")
    return row


def turn_submitter(svc: Services, who: Principal, session_id: str, job_id: str,
                   write: Any) -> Callable[[], Awaitable[Any]]:
    """Submits an `agent` job whose transaction runs `write(conn, job_id)` first."""

    async def on_submit(conn: AsyncConnection, new_job_id: str) -> None:
        await write(conn, new_job_id)
        await conn.execute(agents_db.set_session_status(session_id, "running", new_job_id))

    async def submit() -> Any:
        row, _ = await submit_job(svc, kind="agent", owner_id=who.owner_id,
                                  input={"session_id": session_id}, key_id=who.key_id,
                                  on_submit=on_submit, job_id=job_id)
        return row

    return submit


def user_message(session_id: str, owner_id: str, role: str, content: str) -> Any:
    """The write that starts a turn: the session must be idle; the message is its first item."""

    async def write(conn: AsyncConnection, job_id: str) -> None:
        await _locked_idle(conn, session_id, owner_id, "idle")
        await conn.execute(agents_db.insert_item(
            session_id=session_id, job_id=job_id, type_="message", role=role,
            content=content))

    return write


async def _start(request: Request, session_id: str, stream: bool,
                 write: Any) -> Response:
    """Submit an `agent` job whose transaction runs `write(conn, job_id)` first."""
    svc = services(request)
    job_id = jobs_db.new_job_id()
    submit = turn_submitter(svc, principal(request), session_id, job_id, write)

    if stream:
        # Hanging up does not stop the turn: its items stay readable in the session.
        events = await JobStream.submit(
            svc.hub, svc.events, job_id, submit, keepalive_s=svc.settings.sse_keepalive_s,
            lifetime_s=svc.settings.max_sse_lifetime_s + _STREAM_MARGIN_S)
        events.watch_disconnect(request.receive)
        return event_stream(events, AgentEventWriter())
    row = await submit()
    job = job_read(row).model_dump(mode="json")
    job["links"]["session"] = f"/v1/agents/sessions/{session_id}"
    return Response(orjson.dumps(job), status_code=202, media_type="application/json",
                    headers={"X-Job-ID": str(row.id)})


@doc("Send a message: runs one turn as an `agent` job (SSE with message.delta, tool_call, "
     "tool_result, requires_action, turn.completed/turn.failed if stream, else 202)",
     body=MessageCreate, streams=True, status=202, tags=["agents"])
async def post_message(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    session_id = session_id_of(request)
    await load_session(svc, owner_id, session_id)
    body = await parse(request, MessageCreate, svc.settings.max_json_body_bytes)

    return await _start(request, session_id, body.stream,
                        user_message(session_id, owner_id, body.role, body.content))


Record = Callable[[AsyncConnection, "str | None", Sequence[Any]], Awaitable[list[str]]]


async def _answer(request: Request, session_id: str, owner_id: str, expect: str,
                  stream: bool, record: Record) -> Response:
    """Record one answer (`record` checks it against the items and returns the calls still
    open after it); the last answer resumes the turn as a new job, earlier ones get 200."""
    svc = services(request)

    async def write(conn: AsyncConnection, job_id: str | None) -> list[str]:
        await _locked_idle(conn, session_id, owner_id, expect)
        items = (await conn.execute(agents_db.items_of(session_id))).all()
        return await record(conn, job_id, items)

    async with svc.engine.begin() as conn:
        left = await write(conn, None)
    if left:
        session = await load_session(svc, owner_id, session_id)
        return json_response(session_read(session), status=200)

    async def resume(conn: AsyncConnection, job_id: str) -> None:
        await _locked_idle(conn, session_id, owner_id, expect)

    return await _start(request, session_id, stream, resume)


@doc("Answer one client tool call of a turn that stopped with requires_action; the last "
     "answer resumes the turn (SSE if stream, else 202), earlier ones answer 200",
     body=ToolResultCreate, streams=True, status=202, tags=["agents"])
async def post_tool_result(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    session_id = session_id_of(request)
    await load_session(svc, owner_id, session_id)
    body = await parse(request, ToolResultCreate, svc.settings.max_json_body_bytes)
    output = body.output if isinstance(body.output, str) or body.output is None \
        else json.dumps(body.output)

    async def record(conn: AsyncConnection, job_id: str | None,
                     items: Sequence[Any]) -> list[str]:
        waiting = [call.id for call in pending_calls(items)]
        if body.tool_call_id not in waiting:
            raise ApiError(422, "VALIDATION_FAILED",
                           f"No tool call '{body.tool_call_id}' waits for a result.",
                           param="tool_call_id")
        await conn.execute(agents_db.insert_item(
            session_id=session_id, job_id=job_id, type_="tool_result", role="tool",
            content=output or "", call_id=body.tool_call_id,
            data={"output": output, "error": body.error, "execution_time_ms": None,
                  "client": True}))
        return [call_id for call_id in waiting if call_id != body.tool_call_id]

    return await _answer(request, session_id, owner_id, "requires_action", body.stream,
                         record)


@doc("Approve or deny one tool call of a turn that stopped with approval_required; the "
     "last decision resumes the turn (a denied call returns an error to the model)",
     body=ApprovalCreate, streams=True, status=202, tags=["agents"])
async def post_approval(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    session_id = session_id_of(request)
    session = await load_session(svc, owner_id, session_id)
    agent = await load_agent(svc, owner_id, str(session.agent_id))
    body = await parse(request, ApprovalCreate, svc.settings.max_json_body_bytes)

    async def record(conn: AsyncConnection, job_id: str | None,
                     items: Sequence[Any]) -> list[str]:
        decided = {item.call_id for item in items if item.type == "approval"}
        open_ = [call.id for call in pending_calls(items) if call.id not in decided
                 and (tool_named(agent.tools, call.name) or {}).get("approval_required")]
        if body.tool_call_id not in open_:
            raise ApiError(422, "VALIDATION_FAILED",
                           f"No tool call '{body.tool_call_id}' waits for an approval.",
                           param="tool_call_id")
        await conn.execute(agents_db.insert_item(
            session_id=session_id, job_id=job_id, type_="approval",
            call_id=body.tool_call_id, data={"approved": body.approved, "reason": body.reason}))
        return [call_id for call_id in open_ if call_id != body.tool_call_id]

    return await _answer(request, session_id, owner_id, "requires_approval", body.stream,
                         record)


@doc("Follow the session's latest turn as SSE; resumes after Last-Event-ID (header or "
     "last_event_id query)", streams=True, tags=["agents"])
async def session_events(request: Request) -> Response:
    svc = services(request)
    session = await load_session(svc, principal(request).owner_id, session_id_of(request))
    if session.last_job_id is None:
        raise Conflict("The session has had no turn yet.")
    after = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if after is not None and not is_valid_stream_id(after):
        raise ApiError(400, "VALIDATION_FAILED", "Last-Event-ID is not an event id of this turn.")
    events = await JobStream.resume(svc.hub, svc.events, str(session.last_job_id), after=after,
                                    keepalive_s=svc.settings.sse_keepalive_s,
                                    lifetime_s=svc.settings.max_sse_lifetime_s)
    events.watch_disconnect(request.receive)
    return event_stream(events, AgentEventWriter())


routes = [
    Route("/v1/agents/sessions/{session_id}/messages", post_message, methods=["POST"]),
    Route("/v1/agents/sessions/{session_id}/tool_results", post_tool_result,
          methods=["POST"]),
    Route("/v1/agents/sessions/{session_id}/approvals", post_approval, methods=["POST"]),
    Route("/v1/agents/sessions/{session_id}/events", session_events, methods=["GET"]),
]
