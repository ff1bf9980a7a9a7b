"""The agent's built-in tools: arithmetic without eval, time zones, and http_get's guards."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from pipelines import agent_tools, outbound
from pipelines.agent_items import model_messages, model_tools, pending_calls, steps_in
from pipelines.agent_tools import ToolFailed, calculator, current_time, http_get


@pytest.mark.parametrize(("expression", "value"), [
    ("6 * (3 + 4)", "42"), ("2**10", "1024"), ("7 / 2", "3.5"), ("-3 + 10 // 3", "0"),
    ("sqrt(16) + max(1, 2, 3)", "7"), ("round(pi, 2)", "3.14"), ("17 % 5", "2"),
])
def test_calculator_computes_arithmetic(expression: str, value: str) -> None:
    assert calculator({"expression": expression}) == value


@pytest.mark.parametrize("expression", [
    "__import__('os').getpid()", "(1).__class__", "open('/etc/passwd')", "x + 1",
    "[1, 2]", "lambda: 1", "True + 1", "'a' * 3",
])
def test_calculator_refuses_anything_but_numbers_and_listed_functions(expression: str) -> None:
    with pytest.raises(ToolFailed, match="only numbers"):
        calculator({"expression": expression})


@pytest.mark.parametrize("expression", ["9 ** 9 ** 9", "10 ** 400", "2 ** 100000"])
def test_calculator_refuses_powers_that_would_hang_or_overflow(expression: str) -> None:
    with pytest.raises(ToolFailed, match="too large"):
        calculator({"expression": expression})


@pytest.mark.parametrize("arguments", [{}, {"expression": ""}, {"expression": 5},
                                       {"expression": "1 +"}, {"expression": "1/0"},
                                       {"expression": "1" * 600}])
def test_calculator_reports_bad_input_as_a_tool_error(arguments: dict[str, Any]) -> None:
    with pytest.raises(ToolFailed):
        calculator(arguments)


def test_current_time_is_utc_by_default_and_converts_to_a_named_zone() -> None:
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert current_time({}, now) == "2026-01-15T12:00:00+00:00"
    assert current_time({"timezone": "Asia/Tokyo"}, now) == "2026-01-15T21:00:00+09:00"
    with pytest.raises(ToolFailed, match="unknown time zone"):
        current_time({"timezone": "Mars/Olympus"}, now)


def _client(seen: list[httpx.Request], body: bytes = b"hello") -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body)
    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost:8080/x", "http://[::1]/", "http://10.0.0.8/",
    "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/",
])
def test_http_get_refuses_private_loopback_and_metadata_addresses(url: str) -> None:
    seen: list[httpx.Request] = []
    host = httpx.URL(url).host
    with pytest.raises(ToolFailed):
        asyncio.run(http_get({"url": url}, allowed_hosts=[host],
                             policy=outbound.OutboundPolicy(), max_bytes=100, timeout_s=1,
                             client=_client(seen)))
    assert seen == []


def test_http_get_refuses_a_host_missing_from_the_allow_list() -> None:
    seen: list[httpx.Request] = []
    policy = outbound.OutboundPolicy(allow_private=True)
    with pytest.raises(ToolFailed, match="allow-list"):
        asyncio.run(http_get({"url": "http://127.0.0.1/"}, allowed_hosts=["example.com"],
                             policy=policy, max_bytes=100, timeout_s=1, client=_client(seen)))
    assert seen == []


def test_http_get_fetches_an_allowed_host_at_its_checked_address_and_cuts_the_body() -> None:
    seen: list[httpx.Request] = []
    policy = outbound.OutboundPolicy(allow_private=True)
    text = asyncio.run(http_get({"url": "http://127.0.0.1:9/page"},
                                allowed_hosts=["127.0.0.1"], policy=policy, max_bytes=4,
                                timeout_s=1, client=_client(seen, b"0123456789")))
    assert text == "HTTP 200\n0123"
    assert [str(r.url) for r in seen] == ["http://127.0.0.1:9/page"]
    assert seen[0].method == "GET"


def _item(type_: str, **fields: Any) -> SimpleNamespace:
    return SimpleNamespace(type=type_, role=fields.get("role"), content=fields.get("content"),
                           call_id=fields.get("call_id"), job_id=fields.get("job_id"),
                           data=fields.get("data", {}))


def test_items_become_openai_messages_with_tool_calls_on_their_assistant_message() -> None:
    items = [
        _item("message", role="user", content="hi", job_id="j"),
        _item("message", role="assistant", content="", job_id="j"),
        _item("tool_call", call_id="c1", data={"name": "calculator", "arguments": "{}"}),
        _item("tool_call", call_id="c2", data={"name": "get_weather", "arguments": "{}"}),
        _item("tool_result", role="tool", call_id="c1", content="",
              data={"error": "bad expression"}),
    ]
    messages = model_messages("Be brief.", items)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assistant = messages[2]
    assert assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1",
                           "content": "Error: bad expression"}
    assert [(c.id, c.name) for c in pending_calls(items)] == [("c2", "get_weather")]
    assert steps_in(items, "j") == 1 and steps_in(items, "other") == 0


def test_builtin_and_client_tools_are_offered_as_functions() -> None:
    tools = model_tools([{"type": "calculator"}, {"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {}}}}])
    assert [t["function"]["name"] for t in tools] == ["calculator", "lookup"]
    assert tools[0]["function"]["parameters"] == \
        agent_tools.BUILTIN_SPECS["calculator"]["parameters"]
