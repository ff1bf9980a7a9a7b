"""The real `openai` SDK as a client of Switchyard, whose registry routes a model to a
wire-compatible fake OpenAI upstream. Only `base_url` differs from talking to OpenAI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.integration.gateway import register_model

IMAGE_URL = "data:image/png;base64,iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object",
                                "properties": {"city": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


@pytest.fixture
def upstream(fake_openai: FakeUpstream) -> FakeUpstream:
    fake_openai.reset(text="The quick brown fox.")
    return fake_openai


@pytest.fixture
def model_id(stack: Any, fake_openai: FakeUpstream) -> str:
    return register_model(stack, fake_openai.base_url)["id"]  # type: ignore[no-any-return]


@pytest.fixture
def client(stack: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=stack.admin_key, base_url=f"{stack.base_url}/v1",
                       max_retries=0, timeout=30) as sdk:
        yield sdk


def test_a_whole_completion_comes_back_with_the_upstreams_text_and_usage(client, upstream,
                                                                          model_id):
    completion = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Say something"}])
    assert completion.choices[0].message.content == "The quick brown fox."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.model == model_id


def test_a_streamed_completion_arrives_in_chunks_and_ends_with_usage(client, upstream, model_id):
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Say something"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_streamed_tool_calls_arrive_as_delta_tool_calls(client, upstream, model_id):
    upstream.reset(text="", tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}})
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL], tool_choice="auto", stream=True)
    name, arguments, call_id, finish = "", "", None, None
    for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            call_id = call.id or call_id
            name += (call.function.name or "") if call.function else ""
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather" and json.loads(arguments) == {"city": "Oslo"}
    assert call_id and call_id.startswith("call_")
    assert finish == "tool_calls"
    sent = upstream.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"


def test_a_whole_completion_carries_message_tool_calls(client, upstream, model_id):
    upstream.reset(text="", tool_call={"name": "get_weather", "arguments": {"city": "Rome"}})
    completion = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL], tool_choice={"type": "function",
                                           "function": {"name": "get_weather"}})
    message = completion.choices[0].message
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}
    assert completion.choices[0].finish_reason == "tool_calls"
    # The tool result goes back in the next turn and reaches the upstream intact.
    upstream.reset(text="Sunny.")
    follow_up = client.chat.completions.create(model=model_id, messages=[
        {"role": "user", "content": "Weather in Rome?"},
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ])
    assert follow_up.choices[0].message.content == "Sunny."
    sent = upstream.requests[-1].body["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}


def test_image_parts_stop_and_n_reach_the_upstream(client, upstream, model_id):
    completion = client.chat.completions.create(
        model=model_id, n=1, stop=["\n\n", "END"], max_tokens=50, temperature=0.2,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "low"}}]}])
    assert completion.choices[0].message.content == "The quick brown fox."
    sent = upstream.requests[-1].body
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "low"}}
    assert sent["stop"] == ["\n\n", "END"]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2


def test_n_above_one_is_refused_in_openais_error_shape(client, upstream, model_id):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model=model_id, n=2, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "n"


def test_upstream_rate_limits_raise_the_sdks_rate_limit_error(client, upstream, model_id):
    upstream.reset(error_status=429, retry_after_s=3)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert caught.value.response.headers["retry-after"] == "3"


def test_unknown_models_raise_not_found_and_the_model_list_has_the_registry(client, model_id):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model",
                                       messages=[{"role": "user", "content": "hi"}])
    listed = {m.id: m for m in client.models.list()}
    assert model_id in listed and "dev/echo" in listed
    assert client.models.retrieve(model_id).owned_by == "openai"


def test_answers_say_how_long_they_spent_in_switchyard_besides_the_upstream(client, upstream,
                                                                            model_id):
    ask = {"model": model_id, "messages": [{"role": "user", "content": "Say something"}]}
    whole = client.chat.completions.with_raw_response.create(**ask)
    with client.chat.completions.with_streaming_response.create(**ask, stream=True) as streamed:
        chunks = list(streamed.parse())
    assert whole.parse().choices[0].message.content == "The quick brown fox."
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "The quick brown fox.")
    for headers in (whole.headers, streamed.headers):
        assert float(headers["x-switchyard-overhead-ms"]) >= 0
