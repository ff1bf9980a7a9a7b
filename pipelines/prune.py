"""Pruning a conversation: summarise its oldest turns with a model, keep the latest verbatim.

The summary replaces the pruned turns as ONE system message that takes the oldest pruned
turn's place, so the model still reads it first. Earlier summaries are pruned (and so
re-summarised) like any other turn, which keeps a long conversation at one summary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipelines import chat
from pipelines.conversations import Turn, message_tokens, require_found
from pipelines.db import conversations as conversations_db
from pipelines.errors import Conflict
from pipelines.ports import ChatModel, Emit

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SUMMARISE_INSTRUCTIONS = (
    "You compress chat histories. Summarise the conversation below so that it can continue "
    "from your summary alone: keep facts, names, numbers, decisions, instructions and open "
    "questions; drop pleasantries. Answer with the summary only."
)


@dataclass(frozen=True, slots=True)
class PruneSelection:
    """Which turns go into the summary and which stay as they are."""

    pruned: list[Any]
    kept: list[Any]

    @property
    def pruned_tokens(self) -> int:
        return sum(turn.tokens for turn in self.pruned)


def select_for_prune(turns: Sequence[Turn], keep_last: int) -> PruneSelection:
    """All but the last `keep_last` turns; nothing when that would leave nothing to summarise."""
    cut = max(len(turns) - keep_last, 0)
    if cut == 0:
        return PruneSelection(pruned=[], kept=list(turns))
    return PruneSelection(pruned=list(turns[:cut]), kept=list(turns[cut:]))


def transcript(turns: Sequence[Turn]) -> str:
    """The pruned turns as one plain-text transcript for the summariser."""
    return "\n\n".join(f"{turn.role}: {turn.content}" for turn in turns)


def summary_request(model_id: str, turns: Sequence[Turn], max_tokens: int) -> dict[str, Any]:
    return {
        "model": model_id,
        "messages": [{"role": "system", "content": SUMMARISE_INSTRUCTIONS},
                     {"role": "user", "content": transcript(turns)}],
        "max_tokens": max_tokens,
    }


async def summarise(model: ChatModel, model_id: str, turns: Sequence[Turn], emit: Emit, *,
                    max_tokens: int) -> str:
    """The model's summary of `turns`; its text streams out as `delta` events."""
    result = await chat.complete(model, summary_request(model_id, turns, max_tokens), emit)
    return str(result["content"]).strip()


async def prune(
    engine: AsyncEngine,
    chat_model_for: Callable[[str], Awaitable[ChatModel]],
    *,
    conversation_id: str,
    owner_id: str,
    job_id: str,
    keep_last: int,
    model_id: str | None,
    max_summary_tokens: int,
    emit: Emit,
) -> dict[str, Any]:
    """Summarise and replace the oldest turns; returns the counts before and after.

    Safe to re-run: a pruning already recorded for `job_id` is returned, not repeated; and
    if the turns changed under us (another prune) nothing is written.
    """
    async with engine.connect() as conn:
        conversation = require_found((await conn.execute(
            conversations_db.get(conversation_id, owner_id))).first(), conversation_id)
        turns = (await conn.execute(conversations_db.list_messages(conversation_id))).all()
    model_id = model_id or conversation.model
    previous = conversation.last_pruning or {}
    if previous.get("job_id") == job_id:
        return _result(conversation_id, previous)
    selection = select_for_prune(turns, keep_last)
    system_tokens = (message_tokens("system", conversation.system_prompt, conversation.model)
                     if conversation.system_prompt else 0)
    tokens_before = system_tokens + sum(turn.tokens for turn in turns)
    if not selection.pruned:
        return _result(conversation_id, {
            "messages_pruned": 0, "messages_kept": len(turns), "tokens_before": tokens_before,
            "tokens_after": tokens_before, "summary": None, "model": model_id})
    summary = await summarise(await chat_model_for(model_id), model_id, selection.pruned, emit,
                              max_tokens=max_summary_tokens)
    content = SUMMARY_PREFIX + summary
    summary_tokens = message_tokens("system", content, conversation.model)
    record = {
        "job_id": job_id, "at": datetime.now(UTC).isoformat(), "model": model_id,
        "messages_pruned": len(selection.pruned), "messages_kept": len(selection.kept),
        "tokens_before": tokens_before,
        "tokens_after": tokens_before - selection.pruned_tokens + summary_tokens,
        "summary": summary,
    }
    pruned_ids = [turn.id for turn in selection.pruned]
    async with engine.begin() as conn:
        # The row lock serialises prunes of one conversation.
        require_found((await conn.execute(conversations_db.get(
            conversation_id, owner_id, for_update=True))).first(), conversation_id)
        deleted = (await conn.execute(conversations_db.delete_messages(conversation_id,
                                                                       pruned_ids))).all()
        if len(deleted) != len(pruned_ids):
            raise Conflict("The conversation was pruned by another request meanwhile.")
        await conn.execute(conversations_db.insert_summary(
            message_id=pruned_ids[0], conversation_id=conversation_id, content=content,
            tokens=summary_tokens, job_id=job_id))
        await conn.execute(conversations_db.set_last_pruning(conversation_id, record))
    return _result(conversation_id, record)


def _result(conversation_id: str, record: dict[str, Any]) -> dict[str, Any]:
    keys = ("messages_pruned", "messages_kept", "tokens_before", "tokens_after", "summary",
            "model")
    return {"conversation_id": conversation_id, **{key: record.get(key) for key in keys}}
