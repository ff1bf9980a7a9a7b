"""The real openai/anthropic SDKs, through our providers, against fake upstream servers."""

import json
import traceback
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from pipelines.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from pipelines.ports import ChatChunk, ChatModel
from pipelines.providers.anthropic import AnthropicChatModel
from pipelines.providers.openai import OpenAIChatModel, OpenAIEmbedder
from tests.fakes.upstream import FakeUpstream, spawn_fake_upstream

API_KEY = "sk-test-SECRET-0123456789"
KINDS = ["openai", "anthropic"]
IMAGE_DATA_URL = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream("openai") as openai_up, FakeUpstream("anthropic") as anthropic_up:
        yield {"openai": openai_up, "anthropic": anthropic_up}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def upstream(servers: dict[str, FakeUpstream], kind: str) -> FakeUpstream:
    server = servers[kind]
    server.reset()
    return server


_open_models: list[OpenAIChatModel | AnthropicChatModel] = []


@pytest.fixture(autouse=True)
def _close_models() -> Iterator[None]:
    """Close every model a test made: an SDK client left to the garbage collector leaks its
    pooled sockets, and warnings are errors here."""
    yield
    while _open_models:
        _open_models.pop().close()


def make_model(upstream: FakeUpstream, **options: Any) -> ChatModel:
    settings: dict[str, Any] = {"timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.01}
    settings |= options
    cls = OpenAIChatModel if upstream.kind == "openai" else AnthropicChatModel
    model = cls("upstream-model", api_key=API_KEY, base_url=upstream.base_url, **settings)
    _open_models.append(model)
    return model


def chat(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": "ours", "messages": [{"role": "user", "content": text}], **extra}


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def assembled_tool_calls(chunks: list[ChatChunk]) -> dict[int, dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] = delta.name or call["name"]
            call["arguments"] += delta.arguments
    return calls


def test_text_streams_in_pieces_and_ends_with_finish_reason_and_usage(upstream):
    upstream.reset(text="The quick brown fox jumps.")
    chunks = list(make_model(upstream).stream(chat()))
    assert text_of(chunks) == "The quick brown fox jumps."
    assert len([c for c in chunks if c.text]) == 5
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens > 0
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_tool_calls_stream_as_indexed_deltas_that_assemble_into_the_call(upstream):
    upstream.reset(text="", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}})
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    chunks = list(make_model(upstream).stream(chat(tools=tools, tool_choice="required")))
    calls = assembled_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert chunks[-1].finish_reason == "tool_calls"
    sent = upstream.requests[-1].body
    if upstream.kind == "openai":
        assert sent["tools"] == tools and sent["tool_choice"] == "required"
    else:
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["tool_choice"] == {"type": "any"}


def test_openai_requests_carry_the_upstream_model_usage_option_and_passthrough_fields(servers):
    upstream = servers["openai"]
    upstream.reset()
    request = chat(
        temperature=0.3,
        top_p=0.8,
        max_completion_tokens=64,
        stop=["END"],
        user="user-7",
        dev_options={"token_delay_ms": 5},
        conversation_id="c-1",
    )
    list(make_model(upstream).stream(request))
    recorded = upstream.requests[-1]
    sent = recorded.body
    assert sent["model"] == "upstream-model"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert (sent["temperature"], sent["top_p"]) == (0.3, 0.8)
    assert sent["max_completion_tokens"] == 64
    assert sent["stop"] == ["END"] and sent["user"] == "user-7"
    assert "dev_options" not in sent and "conversation_id" not in sent
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"


def test_anthropic_requests_hoist_the_system_prompt_and_default_max_tokens(servers):
    upstream = servers["anthropic"]
    upstream.reset()
    request = {
        "model": "ours",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
        ],
        "stop": "END",
        "temperature": 0.5,
    }
    list(make_model(upstream).stream(request))
    sent = upstream.requests[-1].body
    assert sent["model"] == "upstream-model"
    assert sent["system"] == "Be terse."
    assert sent["max_tokens"] == 4096
    assert sent["stop_sequences"] == ["END"]
    assert sent["temperature"] == 0.5
    assert sent["stream"] is True
    assert [m["role"] for m in sent["messages"]] == ["user"]


def test_image_parts_arrive_upstream_in_each_providers_own_shape(upstream):
    content = [
        {"type": "text", "text": "Describe these"},
        {"type": "image_url", "image_url": {"url": IMAGE_DATA_URL}},
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}},
    ]
    list(make_model(upstream).stream({"messages": [{"role": "user", "content": content}]}))
    sent = upstream.requests[-1].body["messages"][0]["content"]
    if upstream.kind == "openai":
        assert sent == content
    else:
        assert sent[1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        }
        assert sent[2] == {
            "type": "image",
            "source": {"type": "url", "url": "https://img.test/cat.png"},
        }


def test_rejected_credentials_become_a_502_that_never_reveals_the_key(upstream):
    upstream.reset(error_status=401)
    with pytest.raises(UpstreamError) as caught:
        list(make_model(upstream).stream(chat()))
    error = caught.value
    assert error.status == 502
    assert API_KEY not in str(error)
    assert API_KEY not in "".join(traceback.format_exception(error))
    assert len(upstream.requests) == 1


def test_rate_limits_surface_as_429_with_retry_after_and_are_not_retried(upstream):
    upstream.reset(error_status=429, retry_after_s=7)
    with pytest.raises(UpstreamRateLimited) as caught:
        list(make_model(upstream).stream(chat()))
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7
    assert len(upstream.requests) == 1


def test_a_bad_request_is_reported_as_the_callers_400_with_the_upstream_reason(upstream):
    upstream.reset(error_status=400)
    with pytest.raises(UpstreamError) as caught:
        list(make_model(upstream).stream(chat()))
    assert caught.value.status == 400
    assert "fake 400" in str(caught.value)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_before_output_are_retried_until_the_upstream_recovers(upstream, status):
    upstream.reset(error_status=status, error_times=2, text="Recovered.")
    chunks = list(make_model(upstream, max_retries=2).stream(chat()))
    assert text_of(chunks) == "Recovered."
    assert len(upstream.requests) == 3


def test_server_errors_that_outlast_the_retries_become_upstream_unavailable(upstream):
    upstream.reset(error_status=503)
    with pytest.raises(UpstreamUnavailable):
        list(make_model(upstream, max_retries=1).stream(chat()))
    assert len(upstream.requests) == 2


def test_an_upstream_that_never_answers_times_out_as_504_after_its_retries(upstream):
    upstream.reset(hang=True)
    with pytest.raises(UpstreamTimeout) as caught:
        list(make_model(upstream, timeout_s=0.3, max_retries=1).stream(chat()))
    assert caught.value.status == 504
    assert len(upstream.requests) == 2


def test_a_failure_after_the_first_chunk_is_a_502_and_never_retried(upstream):
    upstream.reset(text="one two three four", stall_after_words=2)
    received: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        for chunk in make_model(upstream, timeout_s=0.3, max_retries=3).stream(chat()):
            received.append(chunk.text)
    assert not isinstance(caught.value, UpstreamTimeout)
    assert caught.value.status == 502
    assert "".join(received) == "one two "
    assert len(upstream.requests) == 1


def test_closing_the_stream_early_closes_the_upstream_request(upstream):
    upstream.reset(text=" ".join(["word"] * 200), gap_ms=10)
    stream = make_model(upstream).stream(chat())
    first = next(iter(stream))
    assert first.text == "word "
    stream.close()  # type: ignore[attr-defined]
    assert upstream.wait_for(lambda: upstream.requests[-1].outcome == "disconnected")


def test_the_embedder_returns_one_vector_per_text_in_order(servers):
    upstream = servers["openai"]
    upstream.reset()
    embedder = OpenAIEmbedder("text-embedding-3-small", 12, API_KEY, upstream.base_url)
    vectors = embedder.embed(["alpha", "beta", "alpha"])
    assert len(vectors) == 3 and all(len(v) == 12 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert upstream.requests[-1].body["dimensions"] == 12


def test_the_embedder_rejects_vectors_of_the_wrong_dimension(servers):
    upstream = servers["openai"]
    upstream.reset(embedding_dimension=8)
    embedder = OpenAIEmbedder("local-embedder", 384, None, upstream.base_url)
    with pytest.raises(UpstreamError):
        embedder.embed(["alpha"])
    assert "dimensions" not in upstream.requests[-1].body


def test_the_fakes_answer_non_streaming_sdk_calls_and_list_models(servers):
    servers["openai"].reset(text="Plain answer.")
    client = openai.OpenAI(api_key=API_KEY, base_url=servers["openai"].base_url, max_retries=0)
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "Plain answer."
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    assert [m.id for m in client.models.list()] == ["fake-model"]
    client.close()

    servers["anthropic"].reset(text="Plain answer.")
    claude = anthropic.Anthropic(api_key=API_KEY, base_url=servers["anthropic"].base_url)
    message = claude.messages.create(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "Plain answer."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    claude.close()


def test_a_fake_can_run_in_its_own_process_and_be_steered_per_request():
    with spawn_fake_upstream("openai", text="From a child process.") as base_url:
        client = openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0)
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_headers={"x-fake-behaviour": json.dumps({"text": "Overridden."})},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "Overridden."
        )
        client.close()
