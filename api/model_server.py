"""`switchyard model-server`: the dev models (`dev/echo`, `dev/lorem`) behind the OpenAI wire
format, as a process of its own.

A `process` deployment needs a real model server to launch, watch and kill, and one must
run on a fresh machine with no network and no weights: this is it. It answers
`GET /v1/models`, `POST /v1/chat/completions` (whole and streamed, with
`stream_options.include_usage`) and `GET /health`, and reuses the dev provider
(pipelines/providers/dev.py), so what it says is exactly what the in-process dev models say.
No auth: it listens where its deployment tells it to (loopback by default).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pipelines.errors import DomainError, UpstreamError, UpstreamUnavailable
from pipelines.providers.dev import DEV_MODELS, DevChatModel

MODEL_IDS = tuple(f"dev/{name}" for name in DEV_MODELS)
_STARTED = int(time.time())


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str, type_: str = "invalid_request_error",
           code: str | None = None, param: str | None = None) -> Response:
    return _json({"error": {"message": message, "type": type_, "param": param,
                            "code": code}}, status)


async def health(request: Request) -> Response:
    return _json({"status": "ok", "models": list(MODEL_IDS)})


async def list_models(request: Request) -> Response:
    data = [{"id": model_id, "object": "model", "created": _STARTED,
             "owned_by": "switchyard-dev"} for model_id in MODEL_IDS]
    return _json({"object": "list", "data": data})


def _model_of(body: dict[str, Any]) -> DevChatModel | Response:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "'model' is required.", param="model")
    try:
        return DevChatModel(model)
    except DomainError:
        return _error(404, f"The model '{model}' does not exist.", code="model_not_found",
                      param="model")


async def chat_completions(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "The body is not valid JSON.")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return _error(400, "'messages' must be a list.", param="messages")
    model = _model_of(body)
    if isinstance(model, Response):
        return model
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(model, body, completion_id, include_usage),
                                 media_type="text/event-stream")
    text: list[str] = []
    finish_reason, usage = "stop", {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        async for chunk in model.stream(body):
            text.append(chunk.text)
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason
            if chunk.usage is not None:
                usage = {"prompt_tokens": chunk.usage.prompt_tokens,
                         "completion_tokens": chunk.usage.completion_tokens}
    except (UpstreamError, UpstreamUnavailable) as exc:
        return _error(502, str(exc), type_="server_error")
    return _json({
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": model.model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": "".join(text)}}],
        "usage": {**usage, "total_tokens": sum(usage.values())},
    })


async def _stream(model: DevChatModel, body: dict[str, Any], completion_id: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())

    def frame(delta: dict[str, Any], finish_reason: str | None = None,
              usage: dict[str, int] | None = None, choices: bool = True) -> bytes:
        chunk: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            if choices else []}
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    yield frame({"role": "assistant", "content": ""})
    try:
        async for chunk in model.stream(body):
            if chunk.text:
                yield frame({"content": chunk.text})
            if chunk.finish_reason:
                yield frame({}, chunk.finish_reason)
                if include_usage and chunk.usage is not None:
                    usage = {"prompt_tokens": chunk.usage.prompt_tokens,
                             "completion_tokens": chunk.usage.completion_tokens,
                             "total_tokens": chunk.usage.total_tokens}
                    yield frame({}, usage=usage, choices=False)
    except (UpstreamError, UpstreamUnavailable) as exc:
        # Headers are gone: an error frame, as OpenAI-compatible servers send mid-stream.
        yield b"data: " + orjson.dumps({"error": {"message": str(exc),
                                                  "type": "server_error"}}) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def create_model_server() -> Starlette:
    """The model server's app (no lifespan: it holds no clients)."""
    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ])


def serve(host: str, port: int, log_level: str = "warning") -> None:
    """Run the model server in the foreground until SIGTERM/SIGINT."""
    import uvicorn

    uvicorn.run(create_model_server(), host=host, port=port, log_level=log_level,
                access_log=False, timeout_graceful_shutdown=5)
