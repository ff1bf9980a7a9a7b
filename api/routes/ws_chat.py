"""`WS /v1/ws/chat`: chat over one WebSocket, one generation at a time.

Client frames: `{type: "start", model, messages, …OpenAI parameters, id?}` (or `{type:
"start", agent_session_id, content}`: one turn of an agent session, whose server-side
tools add `tool_call` and `tool_result` frames),
`{type: "stop"}`, `{type: "ping"}`, `{type: "subscribe", channel: "model_status"}`. Server
frames: `{type: "content", delta, content}`
(the same text twice: `content` is what Stack 2.9's clients read), `{type: "reasoning",
delta}` (a thinking model's reasoning, without `content`), `{type: "tool_call",
index, id?, name?, arguments}`, `{type: "done", finish_reason, usage, model, job_id}`,
`{type: "error", code, message}`, `{type: "pong"}`; a start's optional `id` is echoed on
the frames it causes. `stop` cancels the job (the worker halts at its next token) and
forwards no content after it, then `done` with finish_reason "cancelled". Leaving the
socket cancels a running generation. A bad frame gets an error frame; the socket stays.

After `subscribe` to `model_status` the socket also gets STING's model-status frames, one
per deployment state change as it happens (`model_loading`, `model_loaded`,
`model_unloading`, `model_unloaded`, `model_unhealthy`, `model_failed`, with `model`,
`status`, `state`), relayed from the deployments' event log through the process's hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.bodies import JsonOutOfBounds, loads_bounded
from api.context import principal, services
from api.errors import validation_details
from api.formats.openai import usage_of
from api.formats.writer import AnswerWriter
from api.hub import RESYNC
from api.job_control import cancel_job
from api.job_replies import open_chat
from api.job_stream import JobStream
from api.routes.agent_turns import turn_submitter, user_message
from api.routes.agents import load_session
from pipelines.db.jobs import new_job_id
from pipelines.deploy.lifecycle import DEPLOYMENTS_LOG
from pipelines.errors import DomainError
from schemas.agents import AgentWsStart
from schemas.events import JobFailure
from schemas.jobs import Event
from schemas.openai import ChatCompletionRequest

Frame = dict[str, Any]


class _Frames(AnswerWriter[list[Frame]]):
    """A generation's events as this socket's frames."""

    def __init__(self, session: _Session, job_id: str) -> None:
        self._session = session
        self._job_id = job_id

    def event(self, event: Event) -> list[Frame] | None:
        if event.type != "delta" or self._session.stopped:
            return None
        frames: list[Frame] = []
        if reasoning := event.data.get("reasoning"):
            # No `content` field: clients that print every frame's `content` skip it.
            frames.append({"type": "reasoning", "delta": reasoning})
        if text := event.data.get("text"):
            frames.append({"type": "content", "delta": text, "content": text})
        frames.extend({"type": "tool_call", **call} for call in event.data.get("tool_calls") or ())
        if not frames:
            return None
        self.sent_content = True
        return frames

    def terminal(self, event: Event) -> list[Frame] | None:
        if event.type == "cancelled":
            return self._last({"type": "done", "job_id": self._job_id,
                               "finish_reason": "cancelled", "usage": None})
        return super().terminal(event)

    def finish(self, result: Any) -> list[Frame]:
        return self._last({"type": "done", "job_id": self._job_id,
                           "finish_reason": result.get("finish_reason", "stop"),
                           "model": result.get("model"), "usage": usage_of(result)})

    def error(self, failure: JobFailure) -> list[Frame]:
        return self._last({"type": "error", "code": failure["code"],
                           "message": failure["message"], "job_id": self._job_id})

    def _last(self, frame: Frame) -> list[Frame]:
        # Cleared before the final frame goes out, so a client may start again at once.
        self._session.running = False
        return [frame]


class _AgentFrames(AnswerWriter[list[Frame]]):
    """An agent turn's events as Stack 2.9's frames: `content` for the answer's text,
    `tool_call` and `tool_result` as server-side tools run, `done` at the end of the turn
    (also when it waits for client tool results or approvals, with that as its
    finish_reason and the calls waiting)."""

    def __init__(self, session: _Session, job_id: str) -> None:
        self._session = session
        self._job_id = job_id

    def event(self, event: Event) -> list[Frame] | None:
        if self._session.stopped:
            return None
        data = event.data
        if event.type == "message.delta":
            self.sent_content = True
            return [{"type": "content", "delta": data["delta"], "content": data["delta"]}]
        if event.type == "reasoning.delta":
            return [{"type": "reasoning", "delta": data["delta"]}]
        if event.type == "tool_call":
            # `tool_call_id`, not `id`: a start's `id` is echoed in `id` on every frame.
            return [{"type": "tool_call", "tool_call_id": data["id"], "name": data["name"],
                     "arguments": data["arguments"]}]
        if event.type == "tool_result":
            return [{"type": "tool_result", **data}]
        return None

    def terminal(self, event: Event) -> list[Frame] | None:
        if event.type == "cancelled":
            return self._last({"type": "done", "job_id": self._job_id,
                               "finish_reason": "cancelled", "usage": None})
        return super().terminal(event)

    def finish(self, result: Any) -> list[Frame]:
        frame: Frame = {"type": "done", "job_id": self._job_id,
                        "finish_reason": result.get("stop_reason"),
                        "usage": result.get("usage")}
        if required := result.get("required_action"):
            frame["tool_calls"] = required.get("tool_calls")
        return self._last(frame)

    def error(self, failure: JobFailure) -> list[Frame]:
        return self._last({"type": "error", "code": failure["code"],
                           "message": failure["message"], "job_id": self._job_id})

    def _last(self, frame: Frame) -> list[Frame]:
        self._session.running = False
        return [frame]


# A started generation: its job stream and the writer of its frames.
_Opened = tuple[JobStream, "_Frames | _AgentFrames"]


class _Session:
    """One socket: at most one running generation, and a lock so frames never interleave."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.stream: JobStream | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.stopped = False
        self.running = False
        self.tag: Any = None
        self.status_task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    async def send(self, frame: Frame) -> None:
        if self.tag is not None and frame["type"] != "pong":
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
        opening = self._open_agent_turn if "agent_session_id" in message else self._open_chat
        try:
            stream, frames = await opening(message)
        except ValidationError as exc:
            details = validation_details(exc)
            await self.error("VALIDATION_FAILED",
                             f"Invalid start: {details[0]['field']}: {details[0]['message']}",
                             details=details)
            return
        except DomainError as exc:
            await self.error(exc.code, exc.message)
            return
        self.stream, self.stopped, self.running = stream, False, True
        self.forwarder = asyncio.get_running_loop().create_task(self._forward(stream, frames))

    async def _open_chat(self, message: dict[str, Any]) -> _Opened:
        body = ChatCompletionRequest.model_validate(message)
        # Leaving the socket cancels the job: nobody is left to read it.
        stream = await open_chat(self.ws, body.job_input(), streamed=True,
                                 cancel_on_disconnect=True)
        return stream, _Frames(self, stream.job_id)

    async def _open_agent_turn(self, message: dict[str, Any]) -> _Opened:
        """One turn of an agent session; its frames include server tools' results."""
        svc, who = services(self.ws), principal(self.ws)
        body = AgentWsStart.model_validate(message)
        await load_session(svc, who.owner_id, body.agent_session_id)
        job_id = new_job_id()
        submit = turn_submitter(svc, who, body.agent_session_id, job_id, user_message(
            body.agent_session_id, who.owner_id, "user", body.content))
        # Leaving the socket does not stop the turn: its items stay in the session.
        stream = await JobStream.submit(svc.hub, svc.events, job_id, submit,
                                        keepalive_s=svc.settings.sse_keepalive_s,
                                        lifetime_s=svc.settings.max_sse_lifetime_s)
        return stream, _AgentFrames(self, job_id)

    async def stop(self) -> None:
        if not self.busy or self.stream is None or self.stopped:
            return
        self.stopped = True
        await cancel_job(services(self.ws), self.stream.job_id, principal(self.ws).owner_id,
                         "stopped by client")

    async def _forward(self, stream: JobStream, writer: _Frames | _AgentFrames) -> None:
        async for frames in stream.frames(writer):
            for frame in frames:
                await self.send(frame)
        self.running = False

    async def subscribe(self, channel: Any) -> None:
        if channel != "model_status":
            await self.error("VALIDATION_FAILED", "channel must be model_status.")
            return
        if self.status_task is None:
            svc = services(self.ws)
            ready = asyncio.get_running_loop().create_future()
            self.status_task = asyncio.get_running_loop().create_task(
                self._model_status(svc.hub, svc.keys.channel(DEPLOYMENTS_LOG), ready))
            await ready
        await self.send({"type": "subscribed", "channel": "model_status"})

    async def _model_status(self, hub: Any, channel: str, ready: asyncio.Future[None]) -> None:
        admin = principal(self.ws).is_admin
        try:
            async with hub.subscribe(channel, DEPLOYMENTS_LOG) as queue:
                ready.set_result(None)
                while True:
                    item = await queue.get()
                    if item is RESYNC or not isinstance(item, Event):
                        continue
                    data = item.data
                    if not data.get("frame"):
                        continue
                    frame = {"type": data["frame"], "model": data.get("model"),
                             "status": data.get("model_status"), "state": data.get("state"),
                             "event_id": item.id}
                    if admin:
                        frame.update(deployment_id=data.get("deployment_id"),
                                     previous_state=data.get("previous_state"),
                                     message=data.get("message"),
                                     restart_count=data.get("restart_count"))
                    async with self._send_lock:
                        await self.ws.send_text(orjson.dumps(frame).decode())
        finally:
            if not ready.done():
                ready.set_result(None)

    async def close(self) -> None:
        """The client left: stop forwarding (the stream cancels a job still running)."""
        if self.status_task is not None:
            self.status_task.cancel()
            with contextlib.suppress(BaseException):
                await self.status_task
        if self.forwarder is not None:
            self.forwarder.cancel()
            with contextlib.suppress(BaseException):
                await self.forwarder
        if self.stream is not None:
            await self.stream.close()


async def ws_chat(websocket: WebSocket) -> None:
    await websocket.accept()
    session = _Session(websocket)
    try:
        while True:
            raw = await websocket.receive_text()
            try:
                message = loads_bounded(raw)
            except JsonOutOfBounds as exc:
                await session.error("VALIDATION_FAILED", f"Invalid frame: {exc.message}")
                continue
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
            elif kind == "subscribe":
                await session.subscribe(message.get("channel"))
            else:
                await session.error("VALIDATION_FAILED",
                                    "type must be one of start, stop, ping, subscribe.")
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()


routes = [WebSocketRoute("/v1/ws/chat", ws_chat)]
