"""Agents, their sessions and each session's items: the tables (migration 0012_agents) and
every SQL statement on them.

Owned like every resource: each read and write names the owner, so another user's id finds
nothing. Items are append-only and ordered by `seq`; a tool call or tool result carries the
model's call id, unique per session and type, so a redelivered turn that records a result
again changes nothing (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Insert,
    Select,
    Table,
    Text,
    Update,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import metadata

agents = Table(
    "agents",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("instructions", Text),
    Column("tools", JSONB, nullable=False),
    Column("knowledge_ids", JSONB, nullable=False),
    Column("limits", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("agent_id", UUID(as_uuid=False), ForeignKey("agents.id", ondelete="CASCADE"),
           nullable=False),
    Column("name", Text, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="idle"),
    Column("last_job_id", UUID(as_uuid=False)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

agent_items = Table(
    "agent_items",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("session_id", UUID(as_uuid=False),
           ForeignKey("agent_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, Identity(always=False), nullable=False),
    Column("job_id", UUID(as_uuid=False)),
    Column("type", Text, nullable=False),
    Column("role", Text),
    Column("content", Text),
    Column("call_id", Text),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def new_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ agents

def insert_agent(*, agent_id: str, owner_id: str, values: dict[str, Any]) -> Insert:
    return insert(agents).values(id=agent_id, owner_id=owner_id, **values).returning(agents)


def get_agent(agent_id: str, owner_id: str) -> Select:
    return select(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)


def list_agents(owner_id: str, limit: int, offset: int) -> Select:
    return (select(agents).where(agents.c.owner_id == owner_id)
            .order_by(agents.c.created_at.desc(), agents.c.id.desc()).limit(limit).offset(offset))


def update_agent(agent_id: str, owner_id: str, values: dict[str, Any]) -> Update:
    return (update(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
            .values(**values, updated_at=func.now()).returning(agents))


def delete_agent(agent_id: str, owner_id: str) -> ReturningDelete[Any]:
    return (delete(agents).where(agents.c.id == agent_id, agents.c.owner_id == owner_id)
            .returning(agents.c.id))


# ------------------------------------------------------------------ sessions

def insert_session(*, session_id: str, owner_id: str, agent_id: str, name: str,
                   meta: dict[str, Any]) -> Insert:
    return insert(agent_sessions).values(
        id=session_id, owner_id=owner_id, agent_id=agent_id, name=name,
        metadata=meta).returning(agent_sessions)


def get_session(session_id: str, owner_id: str) -> Select:
    return select(agent_sessions).where(agent_sessions.c.id == session_id,
                                        agent_sessions.c.owner_id == owner_id)


def lock_session(session_id: str, owner_id: str) -> Select:
    """The session row, locked for the transaction that starts or resumes a turn."""
    return get_session(session_id, owner_id).with_for_update()


def list_sessions(owner_id: str, agent_id: str | None, limit: int, offset: int) -> Select:
    query = select(agent_sessions).where(agent_sessions.c.owner_id == owner_id)
    if agent_id is not None:
        query = query.where(agent_sessions.c.agent_id == agent_id)
    return (query.order_by(agent_sessions.c.created_at.desc(), agent_sessions.c.id.desc())
            .limit(limit).offset(offset))


def set_session_status(session_id: str, status: str, job_id: str | None = None) -> Update:
    values: dict[str, Any] = {"status": status, "updated_at": func.now()}
    if job_id is not None:
        values["last_job_id"] = job_id
    return update(agent_sessions).where(agent_sessions.c.id == session_id).values(**values)


def finish_session_turn(session_id: str, job_id: str, status: str) -> Update:
    """The turn's end, only if no later turn took the session over."""
    return (update(agent_sessions)
            .where(agent_sessions.c.id == session_id, agent_sessions.c.last_job_id == job_id)
            .values(status=status, updated_at=func.now()))


def delete_session(session_id: str, owner_id: str) -> ReturningDelete[Any]:
    return (delete(agent_sessions)
            .where(agent_sessions.c.id == session_id, agent_sessions.c.owner_id == owner_id)
            .returning(agent_sessions.c.id, agent_sessions.c.last_job_id,
                       agent_sessions.c.status))


# ------------------------------------------------------------------ items

def insert_item(*, session_id: str, job_id: str | None, type_: str, role: str | None = None,
                content: str | None = None, call_id: str | None = None,
                data: dict[str, Any] | None = None) -> Insert:
    """One item; a tool call or result already recorded under its call id is left alone."""
    return (pg_insert(agent_items)
            .values(id=new_id(), session_id=session_id, job_id=job_id, type=type_, role=role,
                    content=content, call_id=call_id, data=data or {})
            .on_conflict_do_nothing(index_elements=["session_id", "type", "call_id"],
                                    index_where=agent_items.c.call_id.isnot(None))
            .returning(agent_items.c.seq))


def items_of(session_id: str) -> Select:
    return (select(agent_items).where(agent_items.c.session_id == session_id)
            .order_by(agent_items.c.seq))
