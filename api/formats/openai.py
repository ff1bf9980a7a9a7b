"""Rendering chat job events in OpenAI's Chat Completions wire format."""

from __future__ import annotations

from typing import Any

import orjson

from api.errors import error_body, job_error_status
from api.formats.sse import KEEPALIVE_FRAME
from api.formats.writer import AnswerWriter
from schemas.events import JobFailure
from schemas.jobs import Event

DONE_FRAME = b"data: [DONE]\n\n"


class ChunkWriter(AnswerWriter[bytes]):
    """Turns `delta` event payloads into `chat.completion.chunk` SSE frames."""

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self._base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                      "model": model, "system_fingerprint": None}
        self._include_usage = include_usage

    def _frame(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**self._base, "choices": choices, **extra}
        if self._include_usage and "usage" not in extra:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def opening(self) -> bytes:
        return self._frame([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def keepalive(self) -> bytes:
        return KEEPALIVE_FRAME

    def event(self, event: Event) -> bytes | None:
        return self.delta(event.data) if event.type == "delta" else None

    def delta(self, data: dict[str, Any]) -> bytes:
        delta: dict[str, Any] = {}
        if text := data.get("text"):
            delta["content"] = text
        if reasoning := data.get("reasoning"):
            # DeepSeek's and vLLM's field for a thinking model's reasoning.
            delta["reasoning_content"] = reasoning
        if tool_calls := data.get("tool_calls"):
            delta["tool_calls"] = [_tool_call_delta(tc) for tc in tool_calls]
        self.sent_content = True
        return self._frame([{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": None}])

    def finish(self, result: dict[str, Any]) -> bytes:
        frames = self._frame([{"index": 0, "delta": {}, "logprobs": None,
                               "finish_reason": result.get("finish_reason", "stop")}])
        if self._include_usage:
            frames += self._frame([], usage=usage_of(result))
        return frames + DONE_FRAME

    def error(self, failure: JobFailure) -> bytes:
        # The SDK raises an APIError for a chunk that carries `error`.
        return error_frame(error_body("openai", job_error_status(failure), failure["code"],
                                      failure["message"]))


def _tool_call_delta(tc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": tc["index"]}
    function: dict[str, Any] = {}
    if "id" in tc:
        out["id"] = tc["id"]
        out["type"] = "function"
    if "name" in tc:
        function["name"] = tc["name"]
    function["arguments"] = tc.get("arguments", "")
    out["function"] = function
    return out


def usage_of(result: dict[str, Any]) -> dict[str, int]:
    usage = result.get("usage") or {}
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion(completion_id: str, created: int, result: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": result.get("content") or None,
                               "refusal": None}
    if result.get("tool_calls"):
        message["tool_calls"] = result["tool_calls"]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": result.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": result.get("finish_reason", "stop")}],
        "usage": usage_of(result),
        "system_fingerprint": None,
    }


def error_frame(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"
