"""A caller's conversation, and turning new messages into a chat job that continues it.

Shared by `/v1/conversations/{id}/messages` and `conversation_id` on chat completions, so
both build the same history and persist turns the same way: the new turns are written in
the chat job's own transaction (before any worker can answer), the reply by the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection

from api.context import Services, principal, services
from api.job_control import OnSubmit
from pipelines.conversations import conversation_request, new_turns, require_found
from pipelines.db import conversations as conversations_db
from pipelines.errors import ConversationNotFound
from schemas.fields import canonical_uuid


def checked_id(conversation_id: str) -> str:
    """The id in canonical form if it is a UUID in any spelling; anything else cannot name
    a conversation, so: not found."""
    canonical = canonical_uuid(conversation_id)
    if canonical is None:
        raise ConversationNotFound(f"No conversation with id '{conversation_id}'.")
    return canonical


async def load(svc: Services, owner_id: str, conversation_id: str, *,
               with_messages: bool = True) -> tuple[Row[Any], Sequence[Row[Any]]]:
    """The owner's conversation and (optionally) its messages, oldest first; 404 otherwise."""
    conversation_id = checked_id(conversation_id)
    async with svc.autocommit.connect() as conn:
        row = require_found(
            (await conn.execute(conversations_db.get(conversation_id, owner_id))).first(),
            conversation_id)
        turns: Sequence[Row[Any]] = []
        if with_messages:
            turns = (await conn.execute(conversations_db.list_messages(conversation_id))).all()
    return row, turns


async def continue_conversation(svc: Services, owner_id: str, conversation_id: str,
                                base: dict[str, Any],
                                messages: Sequence[dict[str, Any]]) -> tuple[dict[str, Any],
                                                                              OnSubmit]:
    """The chat job input (stored history + `messages`) and the hook that stores `messages`.

    Without a `model` in `base`, the conversation's own model answers.
    """
    conversation, turns = await load(svc, owner_id, conversation_id)
    conversation_id = str(conversation.id)
    base = {**base, "model": base.get("model") or conversation.model}
    rows = new_turns(messages, base["model"])
    job_input = conversation_request(base, conversation.system_prompt, turns, messages,
                                     conversation_id)

    async def store_turns(conn: AsyncConnection, job_id: str) -> None:
        await conn.execute(conversations_db.insert_messages(conversation_id, rows, job_id))
        await conn.execute(conversations_db.touch(conversation_id))

    return job_input, store_turns


async def with_conversation(conn: HTTPConnection,
                            job_input: dict[str, Any]) -> tuple[dict[str, Any], OnSubmit | None]:
    """A chat body as is, or with `conversation_id` its messages appended to that history.

    The body's messages are the new turns: the conversation supplies everything before them.
    """
    conversation_id = job_input.get("conversation_id")
    if not conversation_id:
        return job_input, None
    base = {key: value for key, value in job_input.items() if key != "messages"}
    return await continue_conversation(services(conn), principal(conn).owner_id,
                                       conversation_id, base, job_input["messages"])
