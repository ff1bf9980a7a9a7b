"""Rendering chat job events in Anthropic's Messages wire format.

A stream is `message_start`, then per content block `content_block_start`,
`content_block_delta`… (`text_delta` or, for tool_use blocks, `input_json_delta`),
`content_block_stop`, then `message_delta` (stop_reason, usage) and `message_stop`, with
`ping`s as keep-alives. OpenAI numbers tool calls alone; Anthropic numbers all blocks, so
each tool call gets the next block index as it starts.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from api.errors import error_body, job_error_status
from api.formats.writer import AnswerWriter
from pipelines.translate import openai_finish_reason_to_anthropic
from schemas.events import JobFailure
from schemas.jobs import Event


def frame(type_: str, data: dict[str, Any]) -> bytes:
    return b"event: " + type_.encode() + b"\ndata: " + orjson.dumps({"type": type_, **data}) + (
        b"\n\n")


PING_FRAME = frame("ping", {})


def message_id(job_id: str) -> str:
    return "msg_" + job_id.replace("-", "")


class MessageStreamWriter(AnswerWriter[bytes]):
    """Turns `delta` event payloads into Messages SSE frames."""

    def __init__(self, msg_id: str, model: str, input_tokens: int) -> None:
        self._id = msg_id
        self._model = model
        self._input_tokens = input_tokens
        self._index = -1
        self._open: str | None = None  # "text" or "tool_use"
        self._pinged = False

    def opening(self) -> bytes:
        message: dict[str, Any] = {"id": self._id, "type": "message", "role": "assistant",
                                   "model": self._model,
                                   "content": [], "stop_reason": None, "stop_sequence": None,
                                   "usage": {"input_tokens": self._input_tokens,
                                             "output_tokens": 1}}
        return frame("message_start", {"message": message})

    def keepalive(self) -> bytes:
        return PING_FRAME

    def event(self, event: Event) -> bytes | None:
        # A delta with nothing Anthropic can show (no text, no tool call) sends nothing.
        return (self.delta(event.data) or None) if event.type == "delta" else None

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return frame("content_block_stop", {"index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        out += frame("content_block_start", {"index": self._index, "content_block": block})
        if not self._pinged:
            self._pinged = True
            out += PING_FRAME
        return out

    def delta(self, data: dict[str, Any]) -> bytes:
        out = b""
        if text := data.get("text"):
            if self._open != "text":
                out += self._open_block("text", {"type": "text", "text": ""})
            out += frame("content_block_delta", {
                "index": self._index, "delta": {"type": "text_delta", "text": text}})
        for call in data.get("tool_calls") or []:
            if call.get("id") or call.get("name") or self._open != "tool_use":
                out += self._open_block("tool_use", {
                    "type": "tool_use", "id": call.get("id") or f"toolu_{self._index + 1}",
                    "name": call.get("name") or "", "input": {}})
            if arguments := call.get("arguments"):
                out += frame("content_block_delta", {
                    "index": self._index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments}})
        self.sent_content = self.sent_content or bool(out)
        return out

    def finish(self, result: dict[str, Any]) -> bytes:
        usage = result.get("usage") or {}
        stop_reason = openai_finish_reason_to_anthropic(result.get("finish_reason") or "stop")
        return self._close() + frame("message_delta", {
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"input_tokens": int(usage.get("prompt_tokens") or 0),
                      "output_tokens": int(usage.get("completion_tokens") or 0)},
        }) + frame("message_stop", {})

    def error(self, failure: JobFailure) -> bytes:
        return error_frame(error_body("anthropic", job_error_status(failure), failure["code"],
                                      failure["message"]))


def message(msg_id: str, model: str, result: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming Messages response."""
    content: list[dict[str, Any]] = []
    if result.get("content"):
        content.append({"type": "text", "text": result["content"]})
    for call in result.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = {}
        content.append({"type": "tool_use", "id": call.get("id"),
                        "name": function.get("name"), "input": arguments})
    usage = result.get("usage") or {}
    return {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": openai_finish_reason_to_anthropic(result.get("finish_reason") or "stop"),
        "stop_sequence": None,
        "usage": {"input_tokens": int(usage.get("prompt_tokens") or 0),
                  "output_tokens": int(usage.get("completion_tokens") or 0)},
    }


def error_frame(body: dict[str, Any]) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
