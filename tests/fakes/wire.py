"""Byte-exact OpenAI and Anthropic response bodies for the fake upstreams.

Kept apart from the server so the framing can be read against the providers' docs in
one place: OpenAI `chat.completion.chunk` SSE ending in `data: [DONE]`, Anthropic's
message_start → content_block_* → message_delta → message_stop event sequence.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\s*\S+\s*")


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def split_words(text: str) -> list[str]:
    """Words keeping their trailing whitespace, so the chunks join back to `text`."""
    return _WORD.findall(text)


def split_arguments(arguments: str, parts: int = 3) -> list[str]:
    """A tool call's JSON arguments cut into a few fragments, as real servers stream them."""
    if not arguments:
        return []
    size = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


@dataclass
class Reply:
    """What one response says, decided before rendering it in either format."""

    model: str
    words: list[str]
    tool_name: str | None
    tool_arguments: str
    prompt_tokens: int
    response_id: str
    tool_id: str

    @property
    def completion_tokens(self) -> int:
        return len(self.words) + (1 if self.tool_name else 0)


# ---------------------------------------------------------------- OpenAI


def openai_chunk(reply: Reply, delta: dict[str, Any], finish: str | None, usage: bool) -> bytes:
    chunk: dict[str, Any] = {
        "id": reply.response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None
    return f"data: {dumps(chunk)}\n\n".encode()


def openai_usage_chunk(reply: Reply) -> bytes:
    chunk = {
        "id": reply.response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [],
        "usage": openai_usage(reply),
    }
    return f"data: {dumps(chunk)}\n\n".encode()


def openai_usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def openai_tool_call_deltas(reply: Reply) -> list[dict[str, Any]]:
    first = {
        "index": 0,
        "id": reply.tool_id,
        "type": "function",
        "function": {"name": reply.tool_name, "arguments": ""},
    }
    rest = [
        {"index": 0, "function": {"arguments": piece}}
        for piece in split_arguments(reply.tool_arguments)
    ]
    return [first, *rest]


def openai_completion(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(reply.words) or None,
        "refusal": None,
    }
    if reply.tool_name:
        message["tool_calls"] = [
            {
                "id": reply.tool_id,
                "type": "function",
                "function": {"name": reply.tool_name, "arguments": reply.tool_arguments},
            }
        ]
    return {
        "id": reply.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.tool_name else "stop",
            }
        ],
        "usage": openai_usage(reply),
    }


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def fake_embedding(text: str, dimension: int) -> list[float]:
    """A deterministic unit-ish vector per text, so tests can compare results."""
    digest = hashlib.sha256(text.encode()).digest()
    return [((digest[i % len(digest)] / 255.0) * 2 - 1) for i in range(dimension)]


def encode_embedding(vector: list[float], encoding_format: str | None) -> Any:
    # The openai SDK asks for base64 (little-endian float32) unless told otherwise.
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


# ---------------------------------------------------------------- Anthropic


def anthropic_event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {dumps({'type': kind, **payload})}\n\n".encode()


def anthropic_message_start(reply: Reply) -> bytes:
    message = {
        "id": reply.response_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
    }
    return anthropic_event("message_start", {"message": message})


def anthropic_stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool_name else "end_turn"


def anthropic_message_delta(reply: Reply) -> bytes:
    return anthropic_event(
        "message_delta",
        {
            "delta": {"stop_reason": anthropic_stop_reason(reply), "stop_sequence": None},
            "usage": {"output_tokens": reply.completion_tokens},
        },
    )


def anthropic_message(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.words:
        content.append({"type": "text", "text": "".join(reply.words)})
    if reply.tool_name:
        content.append(
            {
                "type": "tool_use",
                "id": reply.tool_id,
                "name": reply.tool_name,
                "input": json.loads(reply.tool_arguments or "{}"),
            }
        )
    return {
        "id": reply.response_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": anthropic_stop_reason(reply),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
