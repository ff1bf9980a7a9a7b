"""Wire-compatible fake OpenAI and Anthropic servers, run by real uvicorn.

Tests drive the real SDKs against these instead of monkeypatching them. In a test:

    with FakeUpstream("openai", text="Hi there", gap_ms=5) as upstream:
        model = OpenAIChatModel("gpt-x", api_key="sk-test", base_url=upstream.base_url, ...)
        upstream.reset(error_status=503, error_times=2)   # change knobs between calls
        upstream.requests[-1].body                         # what the SDK sent

`Behaviour` lists the knobs. `per_model` overrides them for requests naming a model, and
a request may override them with an `x-fake-behaviour` header holding JSON (handy from an
SDK's `extra_headers`). For benchmarks, run one in its own process (`python -m
tests.fakes.upstream openai`, or `spawn_fake_upstream`) so the server does not share the
client's GIL; control it over `PUT /_fake/behaviour`, `GET /_fake/requests`,
`DELETE /_fake/requests`. `run_fake_upstream(..., processes=N)` runs N such processes on
one port (SO_REUSEPORT, so the kernel spreads connections): one process does a few
thousand requests per second, a benchmark of the direct path needs more. Each process
keeps its own knobs and request log then, so set knobs at start and pass `record=False`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import wire

Kind = Literal["openai", "anthropic"]
_STALL = b"\0stall\0"  # a frame that tells `_paced` to go silent until the client leaves
_GAP = b"\0gap\0"  # a frame that tells `_paced` to wait `gap_ms` (between content words)


@dataclass
class Behaviour:
    """How the fake answers. Times are in milliseconds."""

    text: str = "Hello from the fake upstream."
    echo: bool = False  # reply with the last user message instead of `text`
    ttft_ms: float = 0  # delay before the first chunk (or the whole non-stream reply)
    gap_ms: float = 0  # delay between content words (the first word goes with the first chunk)
    tool_call: dict[str, Any] | None = None  # {"name": ..., "arguments": {...}}
    error_status: int | None = None  # 400/401/429/500/503/529 with a wire-format body
    error_times: int | None = None  # fail this many requests, then succeed; None: always
    retry_after_s: float | None = None  # Retry-After header on errors
    hang: bool = False  # accept the request and never answer
    stall_after_words: int | None = None  # stream this many words, then go silent
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    embedding_dimension: int = 8
    # Knob overrides for requests whose body names the model, e.g. an instant and a paced
    # model served by one fake: {"fake-paced": {"ttft_ms": 50, "gap_ms": 20}}.
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Knob overrides for a request whose last message is a tool result (an agent's next
    # step), e.g. {"tool_call": None, "echo": True}: call a tool once, then answer with
    # its result.
    after_tool: dict[str, Any] | None = None
    # Streamed before the answer as a thinking model's reasoning: OpenAI-compatible
    # `reasoning_content` deltas (DeepSeek, vLLM), Anthropic `thinking` blocks.
    reasoning: str | None = None
    record: bool = True  # keep `requests`; benchmarks turn it off so memory stays flat
    # OpenAI only. Answer 200 with exactly this body instead of a completion (an HTML page,
    # a broken or hand-made event stream); a list is sent frame by frame, `gap_ms` apart.
    raw_reply: str | list[str] | None = None
    raw_content_type: str = "text/event-stream"
    ignore_stream: bool = False  # OpenAI only: answer whole JSON even when asked to stream


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    # pending → streaming → completed | disconnected (client left mid-answer); error; hung
    outcome: str = "pending"


class FakeUpstream:
    """One fake server; a context manager that runs it on a free 127.0.0.1 port."""

    def __init__(self, kind: Kind, *, port: int = 0, reuse_port: bool = False,
                 **knobs: Any) -> None:
        self.kind = kind
        self.behaviour = Behaviour(**knobs)
        self.requests: list[RecordedRequest] = []
        self.port = port
        self._reuse_port = reuse_port  # share `port` with sibling processes
        self._failures = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=self._routes())

    # ------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        """What to give the SDK: the OpenAI SDK wants `/v1`, the Anthropic SDK adds it."""
        root = f"http://127.0.0.1:{self.port}"
        return f"{root}/v1" if self.kind == "openai" else root

    def reset(self, **knobs: Any) -> None:
        """Fresh knobs, failure counter and request log."""
        self.behaviour = Behaviour(**knobs)
        self._failures = 0
        self.requests.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        """Poll `predicate` (the server runs in another thread) until true or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def __enter__(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", ws="none",
            timeout_keep_alive=30, backlog=2048,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        # force_exit: do not wait for hanging requests, which never finish by design.
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)

    # ------------------------------------------------------------ app

    def _routes(self) -> list[Route]:
        answer = self._openai if self.kind == "openai" else self._anthropic
        path = "/v1/chat/completions" if self.kind == "openai" else "/v1/messages"
        return [
            Route(path, answer, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            # Ollama's native load/evict (`keep_alive`), beside its OpenAI-compatible API.
            Route("/api/generate", self._ollama_generate, methods=["POST"]),
            Route("/_fake/behaviour", self._set_behaviour, methods=["PUT"]),
            Route("/_fake/requests", self._requests, methods=["GET", "DELETE"]),
        ]

    async def _record(self, request: Request) -> tuple[RecordedRequest, Behaviour]:
        body = await request.json() if await request.body() else None
        record = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        behaviour = self.behaviour
        if behaviour.record:
            self.requests.append(record)
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model in behaviour.per_model:
            behaviour = dataclasses.replace(behaviour, **behaviour.per_model[model])
        messages = body.get("messages") if isinstance(body, dict) else None
        if behaviour.after_tool is not None and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "tool":
            behaviour = dataclasses.replace(behaviour, **behaviour.after_tool)
        override = request.headers.get("x-fake-behaviour")
        if override:
            behaviour = dataclasses.replace(behaviour, **json.loads(override))
        return record, behaviour

    async def _refusal(
        self, request: Request, record: RecordedRequest, behaviour: Behaviour
    ) -> Response | None:
        """The error or hang `behaviour` asks for, or None to answer normally."""
        if behaviour.hang:
            record.outcome = "hung"
            while (await request.receive())["type"] != "http.disconnect":
                pass
            record.outcome = "disconnected"
            return Response(status_code=499)
        status = behaviour.error_status
        if status is None:
            return None
        if behaviour.error_times is not None:
            if self._failures >= behaviour.error_times:
                return None
            self._failures += 1
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        key = key or request.headers.get("x-api-key", "")
        # Like the real thing, a 401 names the key it got: providers must not pass it on.
        message = f"Incorrect API key provided: {key}" if status == 401 else f"fake {status}"
        payload = (wire.openai_error if self.kind == "openai" else wire.anthropic_error)(
            status, message
        )
        headers = {}
        if behaviour.retry_after_s is not None:
            headers["retry-after"] = f"{behaviour.retry_after_s:g}"
        record.outcome = "error"
        return JSONResponse(payload, status_code=status, headers=headers)

    def _reply(self, body: dict[str, Any], behaviour: Behaviour) -> wire.Reply:
        messages = body.get("messages") or []
        text = behaviour.text
        if behaviour.echo:
            last = messages[-1] if messages else {}
            # After a tool result, echo that result (what an agent's answer would cite).
            text = (str(last.get("content") or "") if last.get("role") == "tool"
                    else _last_user_text(messages))
        tool = behaviour.tool_call
        prompt_words = sum(len(json.dumps(m.get("content", "")).split()) for m in messages)
        return wire.Reply(
            model=str(body.get("model", "fake-model")),
            words=wire.split_words(text),
            tool_name=tool["name"] if tool else None,
            tool_arguments=wire.dumps(tool.get("arguments", {})) if tool else "",
            prompt_tokens=prompt_words + len(messages) * 3,
            response_id=("chatcmpl-" if self.kind == "openai" else "msg_") + uuid.uuid4().hex,
            tool_id=("call_" if self.kind == "openai" else "toolu_") + uuid.uuid4().hex[:24],
        )

    async def _openai(self, request: Request) -> Response:
        record, behaviour = await self._record(request)
        refusal = await self._refusal(request, record, behaviour)
        if refusal is not None:
            return refusal
        if behaviour.raw_reply is not None:
            return _raw_reply(behaviour, record)
        body = record.body or {}
        reply = self._reply(body, behaviour)
        if not body.get("stream") or behaviour.ignore_stream:
            await _sleep_ms(behaviour.ttft_ms)
            record.outcome = "completed"
            return JSONResponse(wire.openai_completion(reply))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def frames() -> Iterator[bytes]:
            yield wire.openai_chunk(reply, {"role": "assistant", "content": ""}, None, usage)
            for word in wire.split_words(behaviour.reasoning or ""):
                yield wire.openai_chunk(reply, {"reasoning_content": word}, None, usage)
                yield _GAP
            for i, word in enumerate(reply.words):
                if i:
                    yield _GAP
                yield wire.openai_chunk(reply, {"content": word}, None, usage)
                if i + 1 == behaviour.stall_after_words:
                    yield _STALL
            if reply.tool_name:
                for call in wire.openai_tool_call_deltas(reply):
                    yield wire.openai_chunk(reply, {"tool_calls": [call]}, None, usage)
            finish = "tool_calls" if reply.tool_name else "stop"
            yield wire.openai_chunk(reply, {}, finish, usage)
            if usage:
                yield wire.openai_usage_chunk(reply)
            yield b"data: [DONE]\n\n"

        return _EventStream(_paced(frames(), behaviour), record)

    async def _anthropic(self, request: Request) -> Response:
        record, behaviour = await self._record(request)
        refusal = await self._refusal(request, record, behaviour)
        if refusal is not None:
            return refusal
        body = record.body or {}
        reply = self._reply(body, behaviour)
        if not body.get("stream"):
            await _sleep_ms(behaviour.ttft_ms)
            record.outcome = "completed"
            return JSONResponse(wire.anthropic_message(reply))

        def frames() -> Iterator[bytes]:
            event = wire.anthropic_event
            yield wire.anthropic_message_start(reply)
            index = 0
            if behaviour.reasoning:
                thinking = {"type": "thinking", "thinking": "", "signature": ""}
                yield event("content_block_start", {"index": 0, "content_block": thinking})
                for word in wire.split_words(behaviour.reasoning):
                    delta = {"type": "thinking_delta", "thinking": word}
                    yield event("content_block_delta", {"index": 0, "delta": delta})
                    yield _GAP
                signed = {"type": "signature_delta", "signature": "fake-signature"}
                yield event("content_block_delta", {"index": 0, "delta": signed})
                yield event("content_block_stop", {"index": 0})
                index = 1
            if reply.words or not reply.tool_name:
                block: dict[str, Any] = {"type": "text", "text": ""}
                text_index = index
                yield event("content_block_start", {"index": text_index, "content_block": block})
                yield event("ping", {})
                for i, word in enumerate(reply.words):
                    if i:
                        yield _GAP
                    delta = {"type": "text_delta", "text": word}
                    yield event("content_block_delta", {"index": text_index, "delta": delta})
                    if i + 1 == behaviour.stall_after_words:
                        yield _STALL
                yield event("content_block_stop", {"index": text_index})
                index = text_index + 1
            if reply.tool_name:
                block = {"type": "tool_use", "id": reply.tool_id, "name": reply.tool_name,
                         "input": {}}  # fmt: skip
                yield event("content_block_start", {"index": index, "content_block": block})
                for piece in wire.split_arguments(reply.tool_arguments):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield event("content_block_delta", {"index": index, "delta": delta})
                yield event("content_block_stop", {"index": index})
            yield wire.anthropic_message_delta(reply)
            yield event("message_stop", {})

        return _EventStream(_paced(frames(), behaviour), record)

    async def _embeddings(self, request: Request) -> Response:
        record, behaviour = await self._record(request)
        refusal = await self._refusal(request, record, behaviour)
        if refusal is not None:
            return refusal
        body = record.body or {}
        texts = body.get("input") or []
        texts = [texts] if isinstance(texts, str) else texts
        dimension = int(body.get("dimensions") or behaviour.embedding_dimension)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": wire.encode_embedding(
                    wire.fake_embedding(str(text), dimension), body.get("encoding_format")
                ),
            }
            for i, text in enumerate(texts)
        ]
        tokens = sum(len(str(t).split()) for t in texts)
        record.outcome = "completed"
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
            for m in self.behaviour.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _ollama_generate(self, request: Request) -> Response:
        record, _ = await self._record(request)
        body = record.body or {}
        unloading = body.get("keep_alive") in (0, "0", "0s")
        return JSONResponse({"model": body.get("model"), "response": "", "done": True,
                             "done_reason": "unload" if unloading else "load"})

    async def _set_behaviour(self, request: Request) -> Response:
        self.reset(**(await request.json()))
        return JSONResponse(dataclasses.asdict(self.behaviour))

    async def _requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
        return JSONResponse([dataclasses.asdict(r) for r in self.requests])


class _EventStream(StreamingResponse):
    """An SSE response that records whether the client stayed to the end."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], record: RecordedRequest,
                 media_type: str | None = None) -> None:
        super().__init__(content, headers={"cache-control": "no-cache"}, media_type=media_type)
        self._record = record

    async def stream_response(self, send: Any) -> None:
        self._record.outcome = "streaming"
        try:
            await super().stream_response(send)
        except BaseException:
            # Starlette cancels this task when the client disconnects (ASGI spec < 2.4).
            self._record.outcome = "disconnected"
            raise
        self._record.outcome = "completed"


def _raw_reply(behaviour: Behaviour, record: RecordedRequest) -> Response:
    raw = behaviour.raw_reply
    pieces = [raw] if isinstance(raw, str) else list(raw or [])

    def frames() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            if i:
                yield _GAP
            yield piece.encode()

    return _EventStream(_paced(frames(), behaviour), record, media_type=behaviour.raw_content_type)


async def _paced(frames: Iterator[bytes], behaviour: Behaviour) -> AsyncIterator[bytes]:
    """`frames` after `ttft_ms`, waiting `gap_ms` at each `_GAP`: a word every `gap_ms`."""
    await _sleep_ms(behaviour.ttft_ms)
    for frame in frames:
        if frame is _STALL:
            await asyncio.Event().wait()
        elif frame is _GAP:
            await _sleep_ms(behaviour.gap_ms)
        else:
            yield frame


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
    return ""


@dataclass
class FakeProcesses:
    """Fake upstream processes serving one port: where to send requests, whose CPU to read."""

    base_url: str
    pids: list[int]


@contextlib.contextmanager
def run_fake_upstream(kind: Kind, *, processes: int = 1, **knobs: Any) -> Iterator[FakeProcesses]:
    """Run a fake in `processes` child processes sharing one 127.0.0.1 port."""
    repo_root = Path(__file__).resolve().parents[2]
    # Hold the port (bound, not listening, so it takes no connections) until every child
    # has bound it too, so no other program can take it in between.
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    command = [sys.executable, "-m", "tests.fakes.upstream", kind, json.dumps(knobs),
               "--port", str(port), "--reuse-port"]  # fmt: skip
    children: list[subprocess.Popen[str]] = []
    try:
        base_url = ""
        for _ in range(processes):
            child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=repo_root)
            children.append(child)
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"fake upstream failed to start: {line!r}")
            base_url = line.split()[1]
        reserved.close()
        yield FakeProcesses(base_url, [child.pid for child in children])
    finally:
        reserved.close()
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


@contextlib.contextmanager
def spawn_fake_upstream(kind: Kind, **knobs: Any) -> Iterator[str]:
    """Run a fake in a child process; yields its base URL (as `FakeUpstream.base_url`)."""
    with run_fake_upstream(kind, **knobs) as fake:
        yield fake.base_url


def _die_with_parent() -> None:
    """Have Linux send us SIGTERM when our parent dies, so a benchmark or test killed
    without running its cleanup (SIGKILL, a crash) leaves no fake holding a port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def main() -> None:
    """`python -m tests.fakes.upstream KIND [KNOBS_JSON] [--port N [--reuse-port]]`.

    Prints `READY <base_url>` once listening, then serves until interrupted.
    """
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.upstream")
    parser.add_argument("kind", choices=["openai", "anthropic"])
    parser.add_argument("knobs", nargs="?", default="{}", help="Behaviour knobs as JSON")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other fake processes (SO_REUSEPORT)")
    args = parser.parse_args()
    _die_with_parent()
    with FakeUpstream(args.kind, port=args.port, reuse_port=args.reuse_port,
                      **json.loads(args.knobs)) as upstream:
        print(f"READY {upstream.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
