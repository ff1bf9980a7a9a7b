"""Anthropic Messages ↔ OpenAI Chat Completions request translation.

The OpenAI body is the one internal request format, so `/v1/messages` translates in and
the anthropic provider translates out. Both directions live here so they stay inverse
to each other and are tested as pure functions.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.errors import InvalidInput

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096

ANTHROPIC_TO_OPENAI_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
OPENAI_TO_ANTHROPIC_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def anthropic_stop_reason_to_openai(reason: str | None) -> str | None:
    """OpenAI `finish_reason` for an Anthropic `stop_reason` (unknown ones end as "stop")."""
    return None if reason is None else ANTHROPIC_TO_OPENAI_FINISH.get(reason, "stop")


def openai_finish_reason_to_anthropic(reason: str | None) -> str | None:
    """Anthropic `stop_reason` for an OpenAI `finish_reason`."""
    return None if reason is None else OPENAI_TO_ANTHROPIC_STOP.get(reason, "end_turn")


# ---------------------------------------------------------------- Anthropic → OpenAI


def anthropic_request_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request body as an OpenAI Chat Completions body."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _blocks_text(system)})
    for message in body.get("messages") or []:
        messages.extend(_anthropic_message_to_openai(message))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    if body.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object"},
                },
            }
            for tool in body["tools"]
        ]
    choice = body.get("tool_choice")
    if choice:
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        else:
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(
                kind, "auto"
            )
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _blocks_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(b.get("text", "") for b in content if b.get("type") == "text")


def _anthropic_message_to_openai(message: dict[str, Any]) -> list[dict[str, Any]]:
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidInput(f"unsupported message role {role!r}")
    content = message["content"]  # required by schemas.anthropic.Message
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        calls = [
            {
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": json.dumps(b.get("input") or {})},
            }
            for b in content
            if b.get("type") == "tool_use"
        ]
        out: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    # A user turn: tool results become `tool` messages, which OpenAI wants right after
    # the assistant's tool calls, so they go before the rest of the turn.
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": _blocks_text(block.get("content") or ""),
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _image_url(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source["url"])
    raise InvalidInput(f"unsupported image source {source.get('type')!r}")


# ---------------------------------------------------------------- OpenAI → Anthropic


def openai_request_to_anthropic(
    body: dict[str, Any], *, default_max_tokens: int = DEFAULT_ANTHROPIC_MAX_TOKENS
) -> dict[str, Any]:
    """An OpenAI Chat Completions body as an Anthropic Messages request body.

    Anthropic requires `max_tokens`, caps `temperature` at 1 (OpenAI allows 2) and wants
    the system prompt apart from the turns, so those are adapted rather than copied.
    """
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_parts_text(message.get("content")))
            continue
        turn = _openai_message_to_anthropic(message)
        if messages and messages[-1]["role"] == turn["role"]:
            # Anthropic wants turns to alternate; consecutive tool results share one.
            messages[-1]["content"] = _as_blocks(messages[-1]["content"]) + turn["content"]
        else:
            messages.append(turn)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    out["max_tokens"] = (
        body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    )
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters")
                or {"type": "object", "properties": {}},
            }
            for tool in body["tools"]
            if tool.get("type", "function") == "function"
        ]
    choice = _tool_choice_to_anthropic(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and body.get("tools"):
        choice = (choice or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    if choice:
        out["tool_choice"] = choice
    if body.get("stream"):
        out["stream"] = True
    return out


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}[choice]


def _parts_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n\n".join(p.get("text", "") for p in content if p.get("type") == "text")


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _openai_message_to_anthropic(message: dict[str, Any]) -> dict[str, Any]:
    role, content = message.get("role"), message.get("content")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message["tool_call_id"],
            "content": _parts_text(content),
        }
        return {"role": "user", "content": [result]}
    if role == "assistant":
        blocks: list[dict[str, Any]] = []
        text = _parts_text(content)
        if text:
            blocks.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError as exc:
                raise InvalidInput("tool call arguments are not valid JSON") from exc
            blocks.append(
                {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
            )
        return {"role": "assistant", "content": blocks}
    if role != "user":
        raise InvalidInput(f"unsupported message role {role!r}")
    if isinstance(content, str):
        return {"role": "user", "content": [{"type": "text", "text": content}]}
    blocks = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part["image_url"]))
    return {"role": "user", "content": blocks}


def _image_block(image_url: str | dict[str, Any]) -> dict[str, Any]:
    url = image_url if isinstance(image_url, str) else image_url["url"]
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:") :].split(";")[0] or "image/png"
        if ";base64" not in header:
            raise InvalidInput("image data URLs must be base64-encoded")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}
