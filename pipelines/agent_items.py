"""A session's items as the model sees them, and the tools it is offered.

Items are stored one per message, tool call and tool result (what a client lists), but the
model reads OpenAI messages: an assistant message carries the tool calls that follow it.
`pending_calls` is how a redelivered or resumed turn knows where it stands: the calls of
the last assistant step that have no result yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.agent_tools import BUILTIN_SPECS
from pipelines.errors import DomainError, NotFound


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: str


def model_messages(instructions: str | None, items: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages for `items` (rows with type, role, content, call_id, data)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if item.type == "message":
            messages.append({"role": item.role, "content": item.content or ""})
        elif item.type == "tool_call":
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            if not last.get("content"):
                last["content"] = None
            last.setdefault("tool_calls", []).append({
                "id": item.call_id, "type": "function",
                "function": {"name": item.data.get("name", ""),
                             "arguments": item.data.get("arguments", "")}})
        elif item.type == "tool_result":
            error = item.data.get("error")
            content = item.content or ""
            if error:
                content = f"Error: {error}" + (f"\n{content}" if content else "")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
    return messages


def pending_calls(items: Sequence[Any]) -> list[Call]:
    """Tool calls without a result yet, in the order the model asked for them."""
    answered = {item.call_id for item in items if item.type == "tool_result"}
    return [Call(item.call_id, item.data.get("name", ""), item.data.get("arguments", ""))
            for item in items if item.type == "tool_call" and item.call_id not in answered]


def steps_in(items: Sequence[Any], job_id: str) -> int:
    """How many model steps job `job_id` has recorded (its assistant messages)."""
    return sum(1 for item in items
               if item.type == "message" and item.role == "assistant"
               and str(item.job_id) == job_id)


def model_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent's tools as OpenAI `tools` (built-ins with their own schemas)."""
    out = []
    for tool in tools:
        if tool["type"] == "function":
            function = tool["function"]
            out.append({"type": "function", "function": {
                "name": function["name"], "description": function.get("description") or "",
                "parameters": function.get("parameters") or {"type": "object",
                                                             "properties": {}}}})
        else:
            out.append({"type": "function",
                        "function": {"name": tool["type"], **BUILTIN_SPECS[tool["type"]]}})
    return out


def tool_named(tools: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for tool in tools:
        if (tool["function"]["name"] if tool["type"] == "function" else tool["type"]) == name:
            return tool
    return None


class AgentNotFound(NotFound): ...


class AgentSessionNotFound(NotFound): ...


class TurnTimedOut(DomainError):
    """The turn ran past its agent's `limits.timeout_s`."""

    code = "TIMEOUT"
