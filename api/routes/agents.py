"""Agents (model, instructions, tools, knowledge, limits) and their sessions, owned like
every resource: another user's id answers 404. A session lists its items in order; turns
run through api/routes/agent_turns.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import int_query, json_response, parse, path_id
from api.context import Services, principal, services
from api.errors import ApiError
from api.job_control import cancel_job
from api.knowledge_access import search_groups
from api.openapi import doc
from pipelines.agent_items import AgentNotFound, AgentSessionNotFound
from pipelines.db import agents as agents_db
from pipelines.errors import ModelNotFound
from schemas.agents import (
    AgentCreate,
    AgentList,
    AgentRead,
    ItemRead,
    SessionCreate,
    SessionList,
    SessionRead,
)
from schemas.fields import canonical_uuid

_MAX_PAGE = 100


def _agent_id(request: Request) -> str:
    return path_id(request, "agent_id", AgentNotFound, "agent")


def session_id_of(request: Request) -> str:
    return path_id(request, "session_id", AgentSessionNotFound, "agent session")


def _agent_read(row: Row[Any]) -> AgentRead:
    return AgentRead(id=str(row.id), name=row.name, model=row.model,
                     instructions=row.instructions, tools=list(row.tools),
                     knowledge_ids=list(row.knowledge_ids), limits=dict(row.limits),
                     created_at=row.created_at, updated_at=row.updated_at)


def session_read(row: Row[Any], items: list[Row[Any]] | None = None) -> SessionRead:
    return SessionRead(
        id=str(row.id), agentId=str(row.agent_id), name=row.name, metadata=dict(row.metadata),
        status=row.status, last_job_id=str(row.last_job_id) if row.last_job_id else None,
        created_at=row.created_at, updated_at=row.updated_at,
        items=None if items is None else [
            ItemRead(id=str(i.id), seq=i.seq, type=i.type, role=i.role, content=i.content,
                     data=dict(i.data), job_id=str(i.job_id) if i.job_id else None,
                     created_at=i.created_at) for i in items])


async def _checked(request: Request, owner_id: str) -> dict[str, Any]:
    """An agent body whose model exists and whose knowledge bases the caller can read."""
    svc = services(request)
    body = await parse(request, AgentCreate, svc.settings.max_json_body_bytes)
    try:
        await svc.models.get(body.model)
    except ModelNotFound:
        raise ApiError(422, "VALIDATION_FAILED", f"The model '{body.model}' does not exist.",
                       param="model") from None
    if body.knowledge_ids:
        await search_groups(svc, owner_id, body.knowledge_ids)
    dumped = body.model_dump(mode="json", exclude_none=True)
    return {"name": body.name, "model": body.model, "instructions": body.instructions,
            "tools": dumped["tools"], "knowledge_ids": list(dict.fromkeys(body.knowledge_ids)),
            "limits": dumped["limits"]}


async def load_agent(svc: Services, owner_id: str, agent_id: str) -> Row[Any]:
    """The caller's agent, or 404; an id that is no UUID at all (a body's `agentId`) names
    no agent."""
    row = None
    if canonical_uuid(agent_id) is not None:
        async with svc.autocommit.connect() as conn:
            row = (await conn.execute(agents_db.get_agent(agent_id, owner_id))).first()
    if row is None:
        raise AgentNotFound(f"No agent with id '{agent_id}'.")
    return row


async def load_session(svc: Services, owner_id: str, session_id: str) -> Row[Any]:
    async with svc.autocommit.connect() as conn:
        row = (await conn.execute(agents_db.get_session(session_id, owner_id))).first()
    if row is None:
        raise AgentSessionNotFound(f"No agent session with id '{session_id}'.")
    return row


@doc("Create an agent: model, instructions, tools (built-in or client functions), "
     "knowledge bases and limits", body=AgentCreate, response=AgentRead, status=201,
     tags=["agents"])
async def create_agent(request: Request) -> Response:
    owner_id = principal(request).owner_id
    values = await _checked(request, owner_id)
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(agents_db.insert_agent(
            agent_id=agents_db.new_id(), owner_id=owner_id, values=values))).one()
    return json_response(_agent_read(row), status=201)


@doc("List the caller's agents, newest first (limit, offset)", response=AgentList,
     tags=["agents"])
async def list_agents(request: Request) -> Response:
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 1_000_000)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(agents_db.list_agents(principal(request).owner_id,
                                                         limit, offset))).all()
    return json_response(AgentList(data=[_agent_read(row) for row in rows]))


@doc("One agent", response=AgentRead, tags=["agents"])
async def get_agent(request: Request) -> Response:
    row = await load_agent(services(request), principal(request).owner_id,
                           _agent_id(request))
    return json_response(_agent_read(row))


@doc("Replace an agent's definition (sessions keep their items)", body=AgentCreate,
     response=AgentRead, tags=["agents"])
async def update_agent(request: Request) -> Response:
    owner_id = principal(request).owner_id
    agent_id = _agent_id(request)
    await load_agent(services(request), owner_id, agent_id)
    values = await _checked(request, owner_id)
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(agents_db.update_agent(agent_id, owner_id, values))).first()
    if row is None:
        raise AgentNotFound(f"No agent with id '{agent_id}'.")
    return json_response(_agent_read(row))


@doc("Delete an agent and its sessions", status=204, tags=["agents"])
async def delete_agent(request: Request) -> Response:
    agent_id = _agent_id(request)
    async with services(request).engine.begin() as conn:
        row = (await conn.execute(agents_db.delete_agent(
            agent_id, principal(request).owner_id))).first()
    if row is None:
        raise AgentNotFound(f"No agent with id '{agent_id}'.")
    return Response(status_code=204)


@doc("Create a session of an agent (AmaStudio's body: agentId, name, metadata)",
     body=SessionCreate, response=SessionRead, status=201, tags=["agents"])
async def create_session(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    body = await parse(request, SessionCreate, svc.settings.max_json_body_bytes)
    await load_agent(svc, owner_id, body.agent_id)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(agents_db.insert_session(
            session_id=agents_db.new_id(), owner_id=owner_id, agent_id=body.agent_id,
            name=body.name, meta=body.metadata))).one()
    return json_response(session_read(row, []), status=201)


@doc("List the caller's sessions, newest first (agentId, limit, offset)",
     response=SessionList, tags=["agents"])
async def list_sessions(request: Request) -> Response:
    owner_id = principal(request).owner_id
    agent_id = request.query_params.get("agentId") or request.query_params.get("agent_id")
    if agent_id is not None:
        canonical = canonical_uuid(agent_id)
        if canonical is None:
            raise AgentNotFound(f"No agent with id '{agent_id}'.")
        agent_id = str((await load_agent(services(request), owner_id, canonical)).id)
    limit = int_query(request, "limit", 20, 1, _MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 1_000_000)
    async with services(request).autocommit.connect() as conn:
        rows = (await conn.execute(agents_db.list_sessions(owner_id, agent_id, limit,
                                                           offset))).all()
    return json_response(SessionList(data=[session_read(row) for row in rows]))


@doc("One session with its items (messages, tool calls, tool results) in order",
     response=SessionRead, tags=["agents"])
async def get_session(request: Request) -> Response:
    svc = services(request)
    row = await load_session(svc, principal(request).owner_id, session_id_of(request))
    async with svc.autocommit.connect() as conn:
        items = list((await conn.execute(agents_db.items_of(str(row.id)))).all())
    return json_response(session_read(row, items))


@doc("Delete a session and its items; a turn still running is cancelled", status=204,
     tags=["agents"])
async def delete_session(request: Request) -> Response:
    svc = services(request)
    owner_id = principal(request).owner_id
    session_id = session_id_of(request)
    async with svc.engine.begin() as conn:
        row = (await conn.execute(agents_db.delete_session(session_id, owner_id))).first()
    if row is None:
        raise AgentSessionNotFound(f"No agent session with id '{session_id}'.")
    if row.status == "running" and row.last_job_id is not None:
        # Its worker would otherwise go on calling the model for a session that is gone.
        await cancel_job(svc, str(row.last_job_id), owner_id, "the session was deleted")
    return Response(status_code=204)


routes = [
    Route("/v1/agents", create_agent, methods=["POST"]),
    Route("/v1/agents", list_agents, methods=["GET"]),
    Route("/v1/agents/sessions", create_session, methods=["POST"]),
    Route("/v1/agents/sessions", list_sessions, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/v1/agents/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/v1/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/v1/agents/{agent_id}", update_agent, methods=["PUT"]),
    Route("/v1/agents/{agent_id}", delete_agent, methods=["DELETE"]),
]
