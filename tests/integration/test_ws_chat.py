"""`WS /v1/ws/chat` through the real API and workers: start, content, done, stop, ping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fakes.upstream import FakeUpstream
from tests.integration.gateway import register_model


@pytest.fixture
def ws(stack: Any) -> Iterator[ClientConnection]:
    url = stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    with connect(url, additional_headers=stack.headers, open_timeout=10) as socket:
        yield socket


def receive(socket: ClientConnection, timeout_s: float = 15) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout_s))  # type: ignore[no-any-return]


def until_done(socket: ClientConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    frames = []
    while True:
        frame = receive(socket)
        if frame["type"] in ("done", "error"):
            return frames, frame
        frames.append(frame)


def start(socket: ClientConnection, text: str = "one two three", **extra: Any) -> None:
    socket.send(json.dumps({"type": "start", "model": "dev/echo",
                            "messages": [{"role": "user", "content": text}], **extra}))


def test_a_start_streams_content_then_done_with_usage(ws):
    start(ws, "one two three")
    frames, done = until_done(ws)
    assert "".join(f["delta"] for f in frames if f["type"] == "content") == "one two three"
    # Stack 2.9's clients read `content`; it carries the same text as `delta`.
    assert all(f["content"] == f["delta"] for f in frames if f["type"] == "content")
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == 3 and done["usage"]["prompt_tokens"] > 0


def test_several_starts_run_one_after_another_on_one_socket(ws):
    for text in ("first answer", "second answer", "third"):
        start(ws, text, id=text)
        frames, done = until_done(ws)
        assert "".join(f["delta"] for f in frames) == text
        assert done["id"] == text


def test_ping_gets_pong_even_while_generating(ws):
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}
    start(ws, "a b c d e f", dev_options={"token_delay_ms": 50})
    ws.send(json.dumps({"type": "ping"}))
    frames, done = until_done(ws)
    assert {"type": "pong"} in frames and done["type"] == "done"


def test_stop_halts_the_generation_within_one_token(stack, ws):
    socket = ws
    socket.send(json.dumps({"type": "start", "model": "dev/lorem", "max_tokens": 500,
                            "messages": [{"role": "user", "content": "go"}],
                            "dev_options": {"token_delay_ms": 20}}))
    received = 0
    while received < 3:
        if receive(socket)["type"] == "content":
            received += 1
    socket.send(json.dumps({"type": "stop"}))
    after_stop, done = until_done(socket)
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert len([f for f in after_stop if f["type"] == "content"]) <= 1
    job = httpx.get(f"{stack.base_url}/v1/jobs/{done['job_id']}", headers=stack.headers).json()
    assert job["status"] == "cancelled"
    # The socket stays usable for the next generation.
    start(socket, "again")
    frames, done = until_done(socket)
    assert "".join(f["delta"] for f in frames) == "again"


def test_tool_calls_arrive_as_tool_call_frames(stack, ws):
    with FakeUpstream("openai", text="",
                      tool_call={"name": "lookup", "arguments": {"q": "x"}}) as upstream:
        model_id = register_model(stack, upstream.base_url)["id"]
        ws.send(json.dumps({"type": "start", "model": model_id,
                            "messages": [{"role": "user", "content": "look it up"}],
                            "tools": [{"type": "function", "function": {"name": "lookup"}}]}))
        frames, done = until_done(ws)
    calls = [f for f in frames if f["type"] == "tool_call"]
    assert calls[0]["name"] == "lookup" and calls[0]["id"].startswith("call_")
    assert json.loads("".join(c.get("arguments", "") for c in calls)) == {"q": "x"}
    assert done["finish_reason"] == "tool_calls"


def test_bad_frames_get_error_frames_and_the_socket_stays_open(ws):
    ws.send("not json")
    assert receive(ws)["code"] == "INVALID_JSON"
    ws.send(json.dumps({"type": "start", "model": "no-such-model",
                        "messages": [{"role": "user", "content": "x"}]}))
    assert receive(ws)["code"] == "MODEL_NOT_FOUND"
    ws.send(json.dumps({"type": "start", "model": "dev/echo", "messages": []}))
    assert receive(ws)["code"] == "VALIDATION_FAILED"
    ws.send(json.dumps({"type": "dance"}))
    assert receive(ws)["type"] == "error"
    start(ws, "still here")
    frames, done = until_done(ws)
    assert done["type"] == "done"


@pytest.mark.parametrize("where", ["content", "extra field", "key"])
def test_a_nul_in_a_start_gets_an_error_frame_and_the_socket_stays_open(ws, where):
    message = {"type": "start", "model": "dev/echo",
               "messages": [{"role": "user", "content": "a\u0000b"}]}
    if where == "extra field":
        message = {**message, "messages": [{"role": "user", "content": "hi", "x": "\u0000"}]}
    elif where == "key":
        message = {**message, "metadata": {"a\u0000": 1}}
    ws.send(json.dumps(message))
    error = receive(ws)
    assert error["type"] == "error" and error["code"] == "VALIDATION_FAILED"
    assert "NUL" in error["message"]
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}
    start(ws, "still here")
    frames, done = until_done(ws)
    assert done["type"] == "done"


def test_a_running_generation_refuses_a_second_start(ws):
    start(ws, "a b c d e f g h", dev_options={"token_delay_ms": 50})
    start(ws, "second")
    frames, done = until_done(ws)
    errors = [f for f in [*frames, done] if f["type"] == "error"]
    assert errors and errors[0]["code"] == "CONFLICT"


def test_closing_the_socket_cancels_the_running_job(stack):
    url = stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    with connect(url, additional_headers=stack.headers) as socket:
        socket.send(json.dumps({"type": "start", "model": "dev/lorem", "max_tokens": 500,
                                "messages": [{"role": "user", "content": "go"}],
                                "dev_options": {"token_delay_ms": 20}}))
        receive(socket)
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=stack.base_url, headers=stack.headers) as http:
        while time.monotonic() < deadline:
            jobs = http.get("/v1/jobs", params={"kind": "chat", "limit": 1}).json()["data"]
            if jobs and jobs[0]["status"] == "cancelled":
                break
            time.sleep(0.1)
        assert jobs[0]["status"] == "cancelled"


def test_a_socket_without_a_key_is_closed(stack):
    url = stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    with pytest.raises((ConnectionClosed, Exception)):
        with connect(url) as socket:
            socket.recv(timeout=5)
