"""Agents end to end: real uvicorn, real dramatiq workers, real Postgres and Redis; the model
is the wire-compatible fake OpenAI upstream, which asks for a tool and then answers with
the tool's result (its `after_tool` knobs).

Each turn's items are read back from the session, and its events from the SSE stream.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect as ws_connect

from tests.fakes.upstream import FakeUpstream
from tests.integration.conftest import Stack
from tests.integration.gateway import new_user_key, register_model
from tests.integration.jobclient import poll, wait_status
from tests.integration.knowledge_files import create_base, ingest
from tests.integration.processes import children

ANSWER_WITH_RESULT = {"tool_call": None, "echo": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as fake:
        yield fake


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=30.0) as http:
        yield http


@pytest.fixture
def model(stack: Stack, upstream: FakeUpstream) -> str:
    return str(register_model(stack, upstream.base_url, timeout_s=60)["id"])


def new_agent(http: httpx.Client, model: str, tools: list[dict[str, Any]],
              **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/agents", json={"name": "helper", "model": model,
                                             "instructions": "Use tools.", "tools": tools,
                                             **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def new_session(http: httpx.Client, agent_id: str) -> str:
    response = http.post("/v1/agents/sessions",
                         json={"agentId": agent_id, "name": "Debug Session"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stream_turn(http: httpx.Client, path: str,
                body: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """POST with stream: true; (job id, [(type, data)]) until the stream ends."""
    events: list[tuple[str, dict[str, Any]]] = []
    with connect_sse(http, "POST", path, json={**body, "stream": True},
                     timeout=httpx.Timeout(60.0)) as source:
        assert source.response.status_code == 200, source.response.read()
        job_id = source.response.headers["x-job-id"]
        for sse in source.iter_sse():
            if not sse.data:
                continue
            data = sse.json()
            assert data.pop("type") == sse.event
            events.append((sse.event, data))
    return job_id, events


def items_of(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    body = http.get(f"/v1/agents/sessions/{session_id}").json()
    return list(body["items"])


def test_agents_are_validated_owned_and_editable(http: httpx.Client, stack: Stack,
                                                 model: str) -> None:
    agent = new_agent(http, model, [{"type": "calculator"}, {"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}}], limits={"max_steps": 3})
    assert agent["limits"]["max_steps"] == 3 and len(agent["tools"]) == 2
    for bad in ([{"type": "shell"}], [{"type": "http_get"}],
                [{"type": "calculator"}, {"type": "calculator"}],
                [{"type": "function", "function": {"name": "calculator"}}]):
        response = http.post("/v1/agents", json={"name": "x", "model": model, "tools": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_FAILED"
    missing = http.post("/v1/agents", json={"name": "x", "model": "no-such-model"})
    assert missing.status_code == 422
    updated = http.put(f"/v1/agents/{agent['id']}", json={
        "name": "renamed", "model": model, "tools": []})
    assert updated.status_code == 200 and updated.json()["name"] == "renamed"
    assert agent["id"] in {a["id"] for a in http.get("/v1/agents").json()["data"]}
    session_id = new_session(http, agent["id"])
    other = {"Authorization": f"Bearer {new_user_key(stack)}"}
    assert http.get(f"/v1/agents/{agent['id']}", headers=other).status_code == 404
    assert http.get(f"/v1/agents/sessions/{session_id}", headers=other).status_code == 404
    foreign = http.post("/v1/agents/sessions", headers=other, json={"agentId": agent["id"]})
    assert foreign.status_code == 404
    assert http.get("/v1/agents/not-a-uuid").status_code == 404
    assert http.delete(f"/v1/agents/{agent['id']}").status_code == 204
    assert http.get(f"/v1/agents/sessions/{session_id}").status_code == 404


def test_a_turn_runs_the_calculator_and_answers_with_its_result(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "calculator", "arguments": {"expression": "6 * (3 + 4)"}},
                   text="Let me compute.", after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "calculator"}, {"type": "current_time"}])
    session_id = new_session(http, agent["id"])
    job_id, events = stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                                 {"role": "user", "content": "What is 6 * (3 + 4)?"})
    types = [t for t, _ in events]
    first_call = types.index("tool_call")
    assert set(types[:first_call]) == {"message.delta"} and types[-1] == "turn.completed", types
    assert "".join(d["delta"] for _, d in events[:first_call]) == "Let me compute."
    call = events[first_call][1]
    assert call["name"] == "calculator" and call["id"].startswith("call_")
    result = dict(events)["tool_result"]
    assert result["tool_call_id"] == call["id"] and result["output"] == "42"
    assert result["error"] is None and result["execution_time_ms"] >= 0
    after = events[types.index("tool_result"):]
    assert "".join(d["delta"] for t, d in after if t == "message.delta") == "42"
    completed = events[-1][1]
    assert completed["stop_reason"] == "stop" and completed["usage"]["total_tokens"] > 0
    items = items_of(http, session_id)
    assert [(i["type"], i["role"]) for i in items] == [
        ("message", "user"), ("message", "assistant"), ("tool_call", None),
        ("tool_result", "tool"), ("message", "assistant")]
    assert items[1]["content"] == "Let me compute." and items[-1]["content"] == "42"
    # The model was offered the tools, and its second step read the tool's result.
    first, second = (r.body for r in upstream.requests[-2:])
    assert {t["function"]["name"] for t in first["tools"]} == {"calculator", "current_time"}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": call["id"],
                                      "content": "42"}
    assert second["messages"][-2]["tool_calls"][0]["id"] == call["id"]
    job = wait_status(http, job_id)
    assert job["status"] == "succeeded" and job["result"]["output"] == "42"
    assert http.get(f"/v1/agents/sessions/{session_id}").json()["status"] == "idle"


def test_knowledge_search_answers_with_passages_and_their_sources(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    base = create_base(http, name=f"agent-kb-{uuid.uuid4().hex[:6]}")
    doc = ingest(http, base["id"], "falcons.txt",
                 b"The peregrine falcon roosts in the Kestrel Tower every winter.\n",
                 "text/plain")
    upstream.reset(tool_call={"name": "knowledge_search",
                              "arguments": {"query": "where does the peregrine falcon roost"}},
                   after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "knowledge_search"}],
                      knowledge_ids=[base["id"]])
    session_id = new_session(http, agent["id"])
    _, events = stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                            {"role": "user", "content": "Where does the falcon roost?"})
    result = dict(events)["tool_result"]
    assert result["error"] is None and "Kestrel Tower" in result["output"]
    assert result["sources"][0]["document_id"] == doc["id"]
    answer = items_of(http, session_id)[-1]
    assert answer["role"] == "assistant" and "Kestrel Tower" in answer["content"]
    assert events[-1][0] == "turn.completed"


def test_a_client_tool_ends_the_turn_with_requires_action_and_its_result_resumes_it(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}},
                   text="", after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    session_id = new_session(http, agent["id"])
    path = f"/v1/agents/sessions/{session_id}"
    job_id, events = stream_turn(http, f"{path}/messages",
                                 {"role": "user", "content": "Weather in Oslo?"})
    assert [t for t, _ in events] == ["tool_call", "requires_action"]
    waiting = events[-1][1]["tool_calls"]
    assert [(c["name"], c["arguments"]) for c in waiting] == [
        ("get_weather", '{"city":"Oslo"}')]
    job = wait_status(http, job_id)
    assert job["result"]["status"] == "requires_action"
    assert http.get(path).json()["status"] == "requires_action"
    busy = http.post(f"{path}/messages", json={"role": "user", "content": "hello?"})
    assert busy.status_code == 409
    wrong = http.post(f"{path}/tool_results", json={"tool_call_id": "call_nope", "output": 1})
    assert wrong.status_code == 422 and "call_nope" in wrong.json()["error"]["message"]
    _, resumed = stream_turn(http, f"{path}/tool_results",
                             {"tool_call_id": waiting[0]["id"], "output": "Sunny, 21 C"})
    assert resumed[-1][0] == "turn.completed", resumed
    assert "".join(d["delta"] for t, d in resumed if t == "message.delta") == "Sunny, 21 C"
    items = items_of(http, session_id)
    assert [i["type"] for i in items] == ["message", "message", "tool_call", "tool_result",
                                          "message"]
    assert items[3]["data"]["client"] is True
    again = http.post(f"{path}/tool_results", json={"tool_call_id": waiting[0]["id"],
                                                    "output": "x"})
    assert again.status_code == 409


def test_a_model_that_keeps_calling_tools_stops_at_max_steps(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "calculator", "arguments": {"expression": "1+1"}},
                   text="")
    agent = new_agent(http, model, [{"type": "calculator"}], limits={"max_steps": 2})
    session_id = new_session(http, agent["id"])
    _, events = stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                            {"role": "user", "content": "loop"})
    assert [t for t, _ in events].count("tool_result") == 2
    assert events[-1] == ("turn.completed", {**events[-1][1], "stop_reason": "max_steps"})
    items = items_of(http, session_id)
    assert sum(1 for i in items if i["type"] == "tool_call") == 2


def test_bad_tool_arguments_and_unsafe_expressions_come_back_as_tool_errors(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "calculator",
                              "arguments": {"expression": "__import__('os').getpid()"}},
                   after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "calculator"}])
    session_id = new_session(http, agent["id"])
    _, events = stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                            {"role": "user", "content": "run it"})
    result = dict(events)["tool_result"]
    assert result["output"] == "" and "only numbers" in result["error"]
    assert events[-1][0] == "turn.completed"
    assert items_of(http, session_id)[-1]["content"].startswith("Error: only numbers")


def test_a_worker_killed_after_a_tool_result_does_not_run_the_tool_again(
        http: httpx.Client, stack: Stack, upstream: FakeUpstream, model: str) -> None:
    # The model's second step hangs: the worker dies with the tool result committed.
    upstream.reset(tool_call={"name": "calculator", "arguments": {"expression": "2**10"}},
                   after_tool={"hang": True})
    agent = new_agent(http, model, [{"type": "calculator"}])
    session_id = new_session(http, agent["id"])
    sent = http.post(f"/v1/agents/sessions/{session_id}/messages",
                     json={"role": "user", "content": "2 to the 10th?"})
    assert sent.status_code == 202, sent.text
    job_id = sent.json()["id"]
    assert upstream.wait_for(lambda: any(r.outcome == "hung" for r in upstream.requests),
                             timeout_s=30)
    assert stack.workers is not None
    workers = poll(lambda: list(children(stack.workers.pid)), what="worker pids")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    upstream.behaviour.after_tool = ANSWER_WITH_RESULT
    job = wait_status(http, job_id, timeout_s=120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2 and job["result"]["output"] == "1024"
    items = items_of(http, session_id)
    assert [i["type"] for i in items] == ["message", "message", "tool_call", "tool_result",
                                          "message"]
    # One model step asked for the tool; every later request carried its one result.
    asked = [r.body for r in upstream.requests if r.body["messages"][-1]["role"] == "user"]
    assert len(asked) == 1


@pytest.mark.parametrize("approved", [True, False])
def test_a_tool_that_needs_approval_runs_only_once_approved(
        http: httpx.Client, upstream: FakeUpstream, model: str, approved: bool) -> None:
    upstream.reset(tool_call={"name": "calculator", "arguments": {"expression": "6*7"}},
                   text="", after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "calculator", "approval_required": True}])
    session_id = new_session(http, agent["id"])
    path = f"/v1/agents/sessions/{session_id}"
    _, events = stream_turn(http, f"{path}/messages", {"role": "user", "content": "6*7?"})
    assert [t for t, _ in events] == ["tool_call", "approval_required"]
    call_id = events[-1][1]["tool_calls"][0]["id"]
    assert http.get(path).json()["status"] == "requires_approval"
    assert http.post(f"{path}/tool_results", json={"tool_call_id": call_id,
                                                   "output": "x"}).status_code == 409
    _, resumed = stream_turn(http, f"{path}/approvals",
                             {"tool_call_id": call_id, "approved": approved})
    result = dict(resumed)["tool_result"]
    if approved:
        assert result["output"] == "42" and result["error"] is None
    else:
        assert result["output"] == "" and result["error"] == "the user denied this tool call"
    assert resumed[-1][0] == "turn.completed"
    types = [i["type"] for i in items_of(http, session_id)]
    assert types == ["message", "message", "tool_call", "approval", "tool_result", "message"]


def test_the_session_stream_resumes_after_last_event_id(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "current_time", "arguments": {}}, text="",
                   after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "current_time"}])
    session_id = new_session(http, agent["id"])
    path = f"/v1/agents/sessions/{session_id}"
    stream_turn(http, f"{path}/messages", {"role": "user", "content": "time?"})

    def replay(headers: dict[str, str]) -> list[tuple[str, str]]:
        with connect_sse(http, "GET", f"{path}/events", headers=headers) as source:
            assert source.response.status_code == 200
            return [(sse.id, sse.event) for sse in source.iter_sse() if sse.data]

    whole = replay({})
    assert [t for _, t in whole][:2] == ["tool_call", "tool_result"]
    assert whole[-1][1] == "turn.completed"
    after_call = replay({"Last-Event-ID": whole[0][0]})
    assert after_call == whole[1:]
    bad = http.get(f"{path}/events", headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400


def test_a_turn_past_its_time_limit_fails_with_turn_failed_and_frees_the_session(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(hang=True)
    agent = new_agent(http, model, [{"type": "calculator"}], limits={"timeout_s": 1})
    session_id = new_session(http, agent["id"])
    path = f"/v1/agents/sessions/{session_id}"
    job_id, events = stream_turn(http, f"{path}/messages", {"role": "user", "content": "hi"})
    assert [t for t, _ in events] == ["turn.failed"]
    assert events[0][1]["error"]["code"] == "TIMEOUT" and events[0][1]["error"]["status"] == 504
    assert wait_status(http, job_id)["status"] == "failed"
    # A failed turn leaves the session usable: the next message starts a new turn.
    upstream.reset(text="back again")
    _, again = stream_turn(http, f"{path}/messages", {"role": "user", "content": "retry"})
    assert again[-1][0] == "turn.completed"
    assert "".join(d["delta"] for t, d in again if t == "message.delta") == "back again"


def test_deleting_a_session_cancels_its_running_turn(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(hang=True)
    agent = new_agent(http, model, [])
    session_id = new_session(http, agent["id"])
    sent = http.post(f"/v1/agents/sessions/{session_id}/messages",
                     json={"role": "user", "content": "hi"})
    assert sent.status_code == 202
    assert upstream.wait_for(lambda: any(r.outcome == "hung" for r in upstream.requests),
                             timeout_s=30)
    assert http.delete(f"/v1/agents/sessions/{session_id}").status_code == 204
    assert wait_status(http, sent.json()["id"])["status"] == "cancelled"
    assert http.get(f"/v1/agents/sessions/{session_id}").status_code == 404
    upstream.reset()


def test_http_get_reaches_only_hosts_on_the_agents_allow_list(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    url = f"http://127.0.0.1:{upstream.port}/v1/models"
    upstream.reset(tool_call={"name": "http_get", "arguments": {"url": url}}, text="",
                   after_tool=ANSWER_WITH_RESULT)
    allowed = new_agent(http, model, [{"type": "http_get", "allowed_hosts": ["127.0.0.1"]}])
    _, events = stream_turn(http, f"/v1/agents/sessions/{new_session(http, allowed['id'])}"
                            "/messages", {"role": "user", "content": "list models"})
    result = dict(events)["tool_result"]
    assert result["error"] is None and result["output"].startswith("HTTP 200\n")
    assert "fake-model" in result["output"]

    other = new_agent(http, model, [{"type": "http_get", "allowed_hosts": ["example.com"]}])
    _, events = stream_turn(http, f"/v1/agents/sessions/{new_session(http, other['id'])}"
                            "/messages", {"role": "user", "content": "list models"})
    refused = dict(events)["tool_result"]
    assert refused["output"] == "" and "allow-list" in refused["error"]


def test_websocket_chat_runs_an_agent_turn_with_tool_frames(
        http: httpx.Client, stack: Stack, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(tool_call={"name": "calculator", "arguments": {"expression": "2+3"}},
                   text="", after_tool=ANSWER_WITH_RESULT)
    agent = new_agent(http, model, [{"type": "calculator"}])
    session_id = new_session(http, agent["id"])
    url = stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    frames: list[dict[str, Any]] = []
    with ws_connect(url, additional_headers=stack.headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "start", "agent_session_id": session_id,
                                "content": "2+3?", "id": "t1"}))
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(socket.recv(timeout=30)))
        socket.send(json.dumps({"type": "start", "agent_session_id": str(uuid.uuid4()),
                                "content": "x"}))
        missing = json.loads(socket.recv(timeout=30))
    types = [f["type"] for f in frames]
    assert types[0] == "tool_call" and types[1] == "tool_result" and types[-1] == "done", types
    assert frames[1]["output"] == "5" and frames[1]["tool_call_id"] == frames[0]["tool_call_id"]
    assert "".join(f["content"] for f in frames if f["type"] == "content") == "5"
    assert frames[-1]["finish_reason"] == "stop" and all(f["id"] == "t1" for f in frames)
    assert missing["type"] == "error" and missing["code"] == "RESOURCE_NOT_FOUND"


def test_reasoning_streams_as_reasoning_delta_and_is_kept_in_the_session(
        http: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(reasoning="Six sevens are forty-two.", text="42")
    agent = new_agent(http, model, [])
    session_id = new_session(http, agent["id"])
    _, events = stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                            {"role": "user", "content": "6*7?"})
    types = [t for t, _ in events]
    assert types.index("reasoning.delta") < types.index("message.delta"), types
    assert "".join(d["delta"] for t, d in events
                   if t == "reasoning.delta") == "Six sevens are forty-two."
    assert "".join(d["delta"] for t, d in events if t == "message.delta") == "42"
    assert types[-1] == "turn.completed"
    items = items_of(http, session_id)
    assert [(i["type"], i["role"], i["content"]) for i in items] == [
        ("message", "user", "6*7?"), ("reasoning", "assistant", "Six sevens are forty-two."),
        ("message", "assistant", "42")]
    # The next step's model does not get the reasoning back as a message.
    upstream.reset(text="ok")
    stream_turn(http, f"/v1/agents/sessions/{session_id}/messages",
                {"role": "user", "content": "thanks"})
    sent = upstream.requests[-1].body["messages"]
    assert [m["content"] for m in sent] == ["Use tools.", "6*7?", "42", "thanks"]


def test_dev_tools_calls_the_tool_the_user_names_and_quotes_its_result_offline(
        http: httpx.Client) -> None:
    agent = new_agent(http, "dev/tools", [{"type": "current_time"}, {"type": "calculator"}])
    session_id = new_session(http, agent["id"])
    path = f"/v1/agents/sessions/{session_id}/messages"
    _, events = stream_turn(http, path, {"role": "user", "content": "calculator: 2 + 3"})
    call = dict(events)["tool_call"]
    assert (call["name"], call["arguments"]) == ("calculator", '{"expression": "2 + 3"}')
    assert dict(events)["tool_result"]["output"] == "5"
    assert "".join(d["delta"] for t, d in events
                   if t == "message.delta") == "calculator returned: 5"
    assert events[-1][0] == "turn.completed" and events[-1][1]["stop_reason"] == "stop"
    # No tool named: the first one offered, with no arguments it requires.
    _, events = stream_turn(http, path, {"role": "user", "content": "What time is it?"})
    call = dict(events)["tool_call"]
    assert (call["name"], call["arguments"]) == ("current_time", "{}")
    answer = "".join(d["delta"] for t, d in events if t == "message.delta")
    assert answer == f"current_time returned: {dict(events)['tool_result']['output']}"
    assert [i["type"] for i in items_of(http, session_id)] == [
        "message", "message", "tool_call", "tool_result", "message"] * 2


def test_websocket_reasoning_frames_carry_no_content_field(
        http: httpx.Client, stack: Stack, upstream: FakeUpstream, model: str) -> None:
    upstream.reset(reasoning="Let me see.", text="Yes.")
    session_id = new_session(http, new_agent(http, model, [])["id"])
    url = stack.base_url.replace("http://", "ws://") + "/v1/ws/chat"
    frames: list[dict[str, Any]] = []
    with ws_connect(url, additional_headers=stack.headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "start", "agent_session_id": session_id,
                                "content": "well?"}))
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(socket.recv(timeout=30)))
    reasoning = [f for f in frames if f["type"] == "reasoning"]
    assert "".join(f["delta"] for f in reasoning) == "Let me see."
    assert all("content" not in f for f in reasoning)
    # What a Stack 2.9 client prints (`data.content` of every frame) is the answer only.
    assert "".join(f.get("content") or "" for f in frames) == "Yes."
    assert frames[-1]["type"] == "done"
