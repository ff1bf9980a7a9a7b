"""`WS /v1/ws/chat`: chat over one WebSocket, one generation at a time.

Client frames: `{type: "start", model, messages, …OpenAI parameters, id?}`,
`{type: "stop"}`, `{type: "ping"}`. Server frames: `{type: "content", delta}`,
`{type: "tool_call", index, id?, name?, arguments}`, `{type: "done", finish_reason, usage,
model, job_id}`, `{type: "error", code, message}`, `{type: "pong"}`; a start's optional `id`
is echoed on the frames it causes. `stop` cancels the job (the worker halts at its next
token) and forwards no content after it, then `done` with finish_reason "cancelled".
Leaving the socket cancels a running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.chat_jobs import ChatJob, start_chat_job
from api.errors import validation_details
from api.formats.openai import usage_of
from api.job_control import cancel_job
from pipelines.errors import DomainError
from schemas.openai import ChatCompletionRequest


class _Session:
    """One socket: at most one running generation, and a lock so frames never interleave."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.job: ChatJob | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.stopped = False
        # Cleared before the final frame is sent, so a client may start again at once.
        self.running = False
        self.tag: Any = None
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        if self.tag is not None and frame.get("type") not in ("pong",):
            frame["id"] = self.tag
        async with self._send_lock:
            await self.ws.send_text(orjson.dumps(frame).decode())

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    @property
    def busy(self) -> bool:
        return self.running and self.forwarder is not None and not self.forwarder.done()

    async def start(self, message: dict[str, Any]) -> None:
        if self.busy:
            await self.error("CONFLICT", "A generation is already running; send stop first.")
            return
        self.tag = message.pop("id", None)
        message.pop("type", None)
        try:
            body = ChatCompletionRequest.model_validate(message)
            job = await start_chat_job(self.ws, body.job_input())
        except ValidationError as exc:
            details = validation_details(exc)
            await self.error("VALIDATION_FAILED",
                             f"Invalid start: {details[0]['field']}: {details[0]['message']}",
                             details=details)
            return
        except DomainError as exc:
            await self.error(exc.code, exc.message)
            return
        self.job, self.stopped, self.running = job, False, True
        self.forwarder = asyncio.get_running_loop().create_task(self._forward(job))

    async def stop(self) -> None:
        job = self.job
        if not self.busy or job is None or self.stopped:
            return
        self.stopped = True
        await cancel_job(job.svc, job.job_id, job.owner_id, "stopped by client")

    async def _forward(self, job: ChatJob) -> None:
        sent = False
        async for event in job.events:
            if event is None:
                continue
            if event.terminal:
                self.running = False
            if event.type == "delta":
                if self.stopped:
                    continue
                if text := event.data.get("text"):
                    await self.send({"type": "content", "delta": text})
                for call in event.data.get("tool_calls") or []:
                    await self.send({"type": "tool_call", **call})
                sent = True
            elif event.type == "retry" and sent:
                await self.stop()
                self.running = False
                await self.error("UPSTREAM_ERROR", "The generation was interrupted; start again.",
                                 job_id=job.job_id)
                return
            elif event.type == "succeeded":
                result = event.data["result"]
                await self.send({"type": "done", "job_id": job.job_id,
                                 "finish_reason": result.get("finish_reason", "stop"),
                                 "model": result.get("model"), "usage": usage_of(result)})
            elif event.type == "cancelled":
                await self.send({"type": "done", "job_id": job.job_id,
                                 "finish_reason": "cancelled", "usage": None})
            elif event.type == "failed":
                error = event.data.get("error") or {}
                await self.error(error.get("code", "PROCESSING_ERROR"),
                                 error.get("message", "The generation failed."),
                                 job_id=job.job_id)
        self.running = False

    async def close(self) -> None:
        """The client left: cancel what is still running, then stop forwarding."""
        if self.busy and self.job is not None and not self.stopped:
            with contextlib.suppress(Exception):
                await cancel_job(self.job.svc, self.job.job_id, self.job.owner_id,
                                 "client disconnected")
        if self.forwarder is not None:
            self.forwarder.cancel()
            with contextlib.suppress(BaseException):
                await self.forwarder


async def ws_chat(websocket: WebSocket) -> None:
    await websocket.accept()
    session = _Session(websocket)
    try:
        while True:
            raw = await websocket.receive_text()
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                await session.error("INVALID_JSON", "Frames must be JSON objects.")
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "ping":
                await session.send({"type": "pong"})
            elif kind == "start":
                await session.start(message)
            elif kind == "stop":
                await session.stop()
            else:
                await session.error("VALIDATION_FAILED",
                                    "type must be one of start, stop, ping.")
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()


routes = [WebSocketRoute("/v1/ws/chat", ws_chat)]
