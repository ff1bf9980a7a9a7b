"""Conversations: stored histories that become chat requests, and the replies that extend them.

A turn is submitted with its chat job (the API writes the user turn in the job's own
transaction); the worker writes the assistant turn once the completion succeeded, so the
history is complete even when the client hung up. Token counts are local (offline), so
they are comparable across providers and known before any request is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pipelines.errors import ConversationNotFound, InvalidInput
from pipelines.tokens import count_message_tokens

# Roles a client may add to a conversation through chat completions. Assistant and tool
# turns are the conversation's own replies; a client-supplied one would fork the history.
NEW_TURN_ROLES = frozenset({"user", "system", "developer"})


class Turn(Protocol):
    """A stored message as the pure functions below read it."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def tokens(self) -> int: ...


def message_tokens(role: str, content: str, model: str | None) -> int:
    """Tokens one message adds to a prompt, chat framing included (not the reply priming)."""
    message = {"role": role, "content": content}
    return count_message_tokens([message], model) - count_message_tokens([], model)


def flatten_content(content: Any) -> str:
    """Text of an OpenAI message content: a string, or the text parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    return ""


def history(system_prompt: str | None, turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """The OpenAI `messages` a conversation stands for: its system prompt, then every turn."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": turn.role, "content": turn.content} for turn in turns)
    return messages


def new_turns(messages: Sequence[dict[str, Any]], model: str | None) -> list[dict[str, Any]]:
    """Rows (role, content, tokens) for the turns a client adds; refuses replayed replies."""
    rows = []
    for message in messages:
        role = message.get("role")
        if role not in NEW_TURN_ROLES:
            raise InvalidInput(
                f"With conversation_id, send only the new user messages (not '{role}'): "
                "the conversation already holds the history and its replies.")
        content = flatten_content(message.get("content"))
        rows.append({"role": role, "content": content,
                     "tokens": message_tokens(str(role), content, model)})
    return rows


def conversation_request(base: dict[str, Any], system_prompt: str | None,
                         turns: Sequence[Turn], new_messages: Sequence[dict[str, Any]],
                         conversation_id: str) -> dict[str, Any]:
    """A chat job input: the stored history, then the new messages, tagged with the conversation."""
    return {**base, "messages": [*history(system_prompt, turns), *new_messages],
            "conversation_id": conversation_id}


def token_usage(model: str, system_prompt: str | None, turns: Sequence[Turn],
                context_limit: int | None) -> dict[str, Any]:
    """What the conversation's history costs as a prompt, by role, against the context window."""
    by_role: dict[str, int] = {"system": 0, "user": 0, "assistant": 0}
    if system_prompt:
        by_role["system"] += message_tokens("system", system_prompt, model)
    for turn in turns:
        by_role[turn.role] = by_role.get(turn.role, 0) + turn.tokens
    total = sum(by_role.values())
    utilization = round(100 * total / context_limit, 2) if context_limit else None
    return {"total": total, "by_role": by_role, "context_limit": context_limit,
            "utilization_percent": utilization, "model": model}


def require_found(row: Any, conversation_id: str) -> Any:
    """`row`, or ConversationNotFound: a missing and a foreign conversation look the same."""
    if row is None:
        raise ConversationNotFound(f"No conversation with id '{conversation_id}'.")
    return row
