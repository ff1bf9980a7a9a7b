"""Every SQL statement about conversations and their messages.

Built here, executed by whichever connection the caller holds (the API's async one, a
worker's sync one). Every statement that reads or changes a conversation filters by its
owner, so someone else's id finds nothing, exactly like a missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Insert,
    Integer,
    Select,
    Text,
    Update,
    and_,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningDelete

from pipelines.db.tables import conversation_messages as messages
from pipelines.db.tables import conversations

SORTABLE = {"created_at": conversations.c.created_at, "updated_at": conversations.c.updated_at}


def new_conversation_id() -> str:
    return str(uuid.uuid4())


def _message_count() -> Any:
    return (
        select(func.count())
        .where(messages.c.conversation_id == conversations.c.id)
        .scalar_subquery()
        .label("message_count")
    )


def insert_conversation(*, conversation_id: str, owner_id: str, model: str, title: str | None,
                        system_prompt: str | None) -> Insert:
    return (
        insert(conversations)
        .values(id=conversation_id, owner_id=owner_id, model=model, title=title,
                system_prompt=system_prompt)
        .returning(*conversations.c, literal(0).label("message_count"))
    )


def get(conversation_id: str, owner_id: str, *, for_update: bool = False) -> Select:
    stmt = select(*conversations.c, _message_count()).where(
        conversations.c.id == conversation_id, conversations.c.owner_id == owner_id)
    return stmt.with_for_update(of=conversations) if for_update else stmt


def list_for_owner(owner_id: str, *, limit: int, offset: int, sort: str,
                   descending: bool) -> Select:
    """One page, ordered by `sort` with the id as tie-breaker so pages never overlap."""
    column = SORTABLE[sort]
    order = (column.desc(), conversations.c.id.desc()) if descending else (
        column.asc(), conversations.c.id.asc())
    return (
        select(*conversations.c, _message_count())
        .where(conversations.c.owner_id == owner_id)
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )


def count_for_owner(owner_id: str) -> Select:
    return select(func.count()).select_from(conversations).where(
        conversations.c.owner_id == owner_id)


def update_conversation(conversation_id: str, owner_id: str, values: dict[str, Any]) -> Update:
    return (
        update(conversations)
        .where(conversations.c.id == conversation_id, conversations.c.owner_id == owner_id)
        .values(**values, updated_at=func.now())
        .returning(conversations.c.id)
    )


def delete_conversation(conversation_id: str, owner_id: str) -> ReturningDelete[Any]:
    """Messages go with it (ON DELETE CASCADE)."""
    return (
        delete(conversations)
        .where(conversations.c.id == conversation_id, conversations.c.owner_id == owner_id)
        .returning(conversations.c.id)
    )


def touch(conversation_id: str) -> Update:
    return (
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(updated_at=func.now())
    )


def list_messages(conversation_id: str) -> Select:
    """Oldest first: the order the model reads them in."""
    return (
        select(messages)
        .where(messages.c.conversation_id == conversation_id)
        .order_by(messages.c.id)
    )


def insert_messages(conversation_id: str, rows: Sequence[dict[str, Any]],
                    job_id: str | None) -> Insert:
    """Append turns in the given order (ids are assigned in VALUES order)."""
    return insert(messages).values([
        {"conversation_id": conversation_id, "role": row["role"], "content": row["content"],
         "tokens": row["tokens"], "job_id": job_id}
        for row in rows
    ]).returning(messages.c.id)


def insert_reply(*, conversation_id: str, owner_id: str, job_id: str, content: str,
                 tokens: int) -> Insert:
    """The assistant turn of `job_id`, at most once.

    Written only if the conversation is the job owner's and already holds the turn(s)
    submitted with this job: a chat job made any other way never touches a conversation.
    A redelivered job conflicts on the reply's unique index and inserts nothing.
    """
    owned = exists().where(conversations.c.id == conversation_id,
                           conversations.c.owner_id == owner_id)
    asked = exists().where(messages.c.conversation_id == conversation_id,
                           messages.c.job_id == job_id)
    source = select(
        literal(conversation_id, type_=messages.c.conversation_id.type).label("conversation_id"),
        literal("assistant", type_=Text).label("role"),
        literal(content, type_=Text).label("content"),
        literal(tokens, type_=Integer).label("tokens"),
        literal(job_id, type_=messages.c.job_id.type).label("job_id"),
    ).where(and_(owned, asked))
    return (
        insert(messages)
        .from_select(["conversation_id", "role", "content", "tokens", "job_id"], source)
        .on_conflict_do_nothing(
            index_elements=["job_id"],
            index_where=and_(messages.c.role == "assistant", messages.c.job_id.isnot(None)),
        )
        .returning(messages.c.id)
    )


def delete_messages(conversation_id: str,
                    message_ids: Sequence[int]) -> ReturningDelete[Any]:
    return (
        delete(messages)
        .where(messages.c.conversation_id == conversation_id,
               messages.c.id.in_(list(message_ids)))
        .returning(messages.c.id)
    )


def insert_summary(*, message_id: int, conversation_id: str, content: str, tokens: int,
                   job_id: str) -> Insert:
    """The prune summary, reusing the id of the oldest turn it replaces so it sorts first."""
    return insert(messages).values(
        id=message_id, conversation_id=conversation_id, role="system", content=content,
        tokens=tokens, job_id=job_id)


def set_last_pruning(conversation_id: str, last_pruning: dict[str, Any]) -> Update:
    return (
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(last_pruning=last_pruning, updated_at=func.now())
    )
