"""The real `anthropic` SDK as a client of Switchyard's `/v1/messages`, with the model
routed to a fake Anthropic upstream and, across formats, to a fake OpenAI upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.integration.gateway import register_model

PNG = "iVBORw0KGgo="
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream("anthropic") as a, FakeUpstream("openai") as o:
        yield {"anthropic": a, "openai": o}


@pytest.fixture(params=["anthropic", "openai"])
def upstream(request: pytest.FixtureRequest, fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    fake = fakes[request.param]
    fake.reset(text="The quick brown fox.")
    return fake


@pytest.fixture
def model_id(stack: Any, upstream: FakeUpstream) -> str:
    return register_model(stack, upstream.base_url,  # type: ignore[no-any-return]
                          provider=upstream.kind)["id"]


@pytest.fixture
def client(stack: Any) -> Iterator[anthropic.Anthropic]:
    # `api_key` makes the SDK send `x-api-key`, as it does against Anthropic.
    with anthropic.Anthropic(api_key=stack.admin_key, base_url=stack.base_url,
                             max_retries=0, timeout=30) as sdk:
        yield sdk


def ask(text: str = "Say something") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_a_whole_message_comes_back_in_anthropics_shape(client, upstream, model_id):
    message = client.messages.create(model=model_id, max_tokens=100, messages=ask(),
                                     system="Be brief.")
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "The quick brown fox."
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 4 and message.usage.input_tokens > 0
    assert message.model == model_id


def test_a_streamed_message_has_anthropics_exact_event_sequence(client, upstream, model_id):
    with client.messages.stream(model=model_id, max_tokens=100, messages=ask()) as stream:
        events = [event.type for event in stream if not event.type.startswith("text")]
        final = stream.get_final_message()
    assert final.content[0].text == "The quick brown fox."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    assert events[:2] == ["message_start", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[2:-3]) <= {"content_block_delta", "ping"}


def test_the_bearer_header_the_sdk_sends_for_auth_tokens_works_too(stack, upstream, model_id):
    with anthropic.Anthropic(auth_token=stack.admin_key, base_url=stack.base_url,
                             max_retries=0) as sdk:
        message = sdk.messages.create(model=model_id, max_tokens=50, messages=ask())
    assert message.content[0].text == "The quick brown fox."


def test_streamed_tool_use_arrives_as_input_json_deltas(client, upstream, model_id):
    upstream.reset(text="", tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}})
    with client.messages.stream(model=model_id, max_tokens=100, messages=ask("Oslo weather?"),
                                tools=[WEATHER_TOOL],
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in deltas
    tool_use = [block for block in final.content if block.type == "tool_use"]
    assert tool_use[0].name == "get_weather" and tool_use[0].input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"


def test_a_tool_result_and_an_image_reach_the_upstream(client, upstream, model_id):
    upstream.reset(text="A red pixel.")
    message = client.messages.create(model=model_id, max_tokens=100, messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "X"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "text", "text": "And this image?"}]},
    ], tools=[WEATHER_TOOL])
    assert message.content[0].text == "A red pixel."
    sent = upstream.requests[-1].body
    if upstream.kind == "anthropic":
        last = sent["messages"][-1]["content"]
        assert last[0]["type"] == "tool_result" and last[0]["tool_use_id"] == "toolu_1"
        assert last[1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    else:
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1",
                                       "content": "sunny"}
        image = sent["messages"][3]["content"][0]
        assert image["image_url"]["url"] == f"data:image/png;base64,{PNG}"


def test_errors_come_back_as_the_sdks_exceptions(client, upstream, model_id):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=10, messages=ask())
    with pytest.raises(anthropic.UnprocessableEntityError):
        client.messages.create(model=model_id, max_tokens=0, messages=ask())
    upstream.reset(error_status=429, retry_after_s=2)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=model_id, max_tokens=10, messages=ask(), stream=True)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body["type"] == "error"
    upstream.reset(error_status=401)
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(model=model_id, max_tokens=10, messages=ask())
    assert failed.value.status_code == 502


def test_answers_say_how_long_they_spent_in_switchyard_besides_the_upstream(client, upstream,
                                                                            model_id):
    whole = client.messages.with_raw_response.create(model=model_id, max_tokens=100,
                                                     messages=ask())
    with client.messages.with_streaming_response.create(model=model_id, max_tokens=100,
                                                        messages=ask(), stream=True) as streamed:
        events = [event.type for event in streamed.parse()]
    assert whole.parse().content[0].text == "The quick brown fox."
    assert events[0] == "message_start" and events[-1] == "message_stop"
    for headers in (whole.headers, streamed.headers):
        assert float(headers["x-switchyard-overhead-ms"]) >= 0
