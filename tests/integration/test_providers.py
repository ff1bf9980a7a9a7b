"""Our providers against wire-compatible fake upstream servers: the OpenAI provider's own
SSE parser (httpx + orjson, no SDK for chat) and the Anthropic SDK, on the async path the
workers run. Each test makes its model, streams and closes it inside one event loop."""

import asyncio
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
from pipelines.ports import ChatChunk
from pipelines.providers.anthropic import AnthropicChatModel
from pipelines.providers.openai import MalformedUpstream, OpenAIChatModel, OpenAIEmbedder
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


@pytest.fixture
def openai_upstream(servers: dict[str, FakeUpstream]) -> FakeUpstream:
    server = servers["openai"]
    server.reset()
    return server


def make_model(upstream: FakeUpstream, **options: Any) -> OpenAIChatModel | AnthropicChatModel:
    settings: dict[str, Any] = {"timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.01}
    settings |= options
    cls = OpenAIChatModel if upstream.kind == "openai" else AnthropicChatModel
    return cls("upstream-model", api_key=API_KEY, base_url=upstream.base_url, **settings)


def stream_all(upstream: FakeUpstream, request: dict[str, Any], *,
               into: list[ChatChunk] | None = None, **options: Any) -> list[ChatChunk]:
    """Every chunk of one completion; with `into`, what came before a failure stays readable.

    The model is made, used and closed in one event loop: its pooled connections belong to
    the loop that opened them.
    """
    received: list[ChatChunk] = [] if into is None else into

    async def go() -> list[ChatChunk]:
        model = make_model(upstream, **options)
        try:
            async for chunk in model.stream(request):
                received.append(chunk)
        finally:
            await model.aclose()
        return received

    return asyncio.run(go())


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
    chunks = stream_all(upstream, chat())
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
    chunks = stream_all(upstream, chat(tools=tools, tool_choice="required"))
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
    stream_all(upstream, request)
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
    stream_all(upstream, request)
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
    stream_all(upstream, {"messages": [{"role": "user", "content": content}]})
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
        stream_all(upstream, chat())
    error = caught.value
    assert error.status == 502
    assert "rejected the configured credentials" in str(error)
    assert API_KEY not in str(error)
    assert API_KEY not in "".join(traceback.format_exception(error))
    assert len(upstream.requests) == 1


def test_rate_limits_surface_as_429_with_retry_after_and_are_not_retried(upstream):
    upstream.reset(error_status=429, retry_after_s=7)
    with pytest.raises(UpstreamRateLimited) as caught:
        stream_all(upstream, chat())
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7
    assert len(upstream.requests) == 1


def test_a_bad_request_is_reported_as_the_callers_400_with_the_upstream_reason(upstream):
    upstream.reset(error_status=400)
    with pytest.raises(UpstreamError) as caught:
        stream_all(upstream, chat())
    assert caught.value.status == 400
    assert "fake 400" in str(caught.value)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_before_output_are_retried_until_the_upstream_recovers(upstream, status):
    upstream.reset(error_status=status, error_times=2, text="Recovered.")
    chunks = stream_all(upstream, chat(), max_retries=2)
    assert text_of(chunks) == "Recovered."
    assert len(upstream.requests) == 3


def test_server_errors_that_outlast_the_retries_become_upstream_unavailable(upstream):
    upstream.reset(error_status=503)
    with pytest.raises(UpstreamUnavailable):
        stream_all(upstream, chat(), max_retries=1)
    assert len(upstream.requests) == 2


def test_an_upstream_that_never_answers_times_out_as_504_after_its_retries(upstream):
    upstream.reset(hang=True)
    with pytest.raises(UpstreamTimeout) as caught:
        stream_all(upstream, chat(), timeout_s=0.3, max_retries=1)
    assert caught.value.status == 504
    assert len(upstream.requests) == 2


def test_a_failure_after_the_first_chunk_is_a_502_and_never_retried(upstream):
    upstream.reset(text="one two three four", stall_after_words=2)
    received: list[ChatChunk] = []
    with pytest.raises(UpstreamError) as caught:
        stream_all(upstream, chat(), into=received, timeout_s=0.3, max_retries=3)
    assert not isinstance(caught.value, UpstreamTimeout)
    assert caught.value.status == 502
    assert text_of(received) == "one two "
    assert len(upstream.requests) == 1


def test_closing_the_stream_early_closes_the_upstream_request(upstream):
    upstream.reset(text=" ".join(["word"] * 200), gap_ms=10)

    async def go() -> tuple[ChatChunk, bool]:
        model = make_model(upstream)
        try:
            stream = model.stream(chat())
            first = await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            # Asked while the model (and its connection pool) is still open.
            left = await asyncio.to_thread(
                upstream.wait_for, lambda: upstream.requests[-1].outcome == "disconnected")
        finally:
            await model.aclose()
        return first, left

    first, left = asyncio.run(go())
    assert first.text == "word "
    assert left


# --- the OpenAI provider's own parser ------------------------------------------------------


def sse(*events: Any, done: bool = True, newline: str = "\n") -> str:
    """An OpenAI event stream of `events` (dicts as JSON, strings as they are)."""
    lines = [f"data: {json.dumps(e) if isinstance(e, dict) else e}" for e in events]
    if done:
        lines.append("data: [DONE]")
    return "".join(line + newline * 2 for line in lines)


def content(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_an_html_page_answered_with_200_is_a_502_and_not_retried(openai_upstream):
    # What a misconfigured base URL (a proxy's or a web server's page) answers.
    openai_upstream.reset(raw_reply="<html><body><h1>Welcome to nginx!</h1></body></html>",
                          raw_content_type="text/html")
    with pytest.raises(MalformedUpstream) as caught:
        stream_all(openai_upstream, chat())
    assert isinstance(caught.value, UpstreamError) and caught.value.status == 502
    assert "text/html" in str(caught.value)
    assert len(openai_upstream.requests) == 1


def test_an_event_whose_data_is_not_json_is_a_502(openai_upstream):
    openai_upstream.reset(raw_reply=sse(content("Hi "), "{this is not json"))
    received: list[ChatChunk] = []
    with pytest.raises(MalformedUpstream) as caught:
        stream_all(openai_upstream, chat(), into=received)
    assert caught.value.status == 502
    assert text_of(received) == "Hi "
    assert len(openai_upstream.requests) == 1


def test_a_stream_that_ends_before_the_completion_did_is_a_502(openai_upstream):
    # No finish_reason and no [DONE]: the connection closed mid-answer.
    openai_upstream.reset(raw_reply=sse(content("Hel"), content("lo"), done=False))
    received: list[ChatChunk] = []
    with pytest.raises(MalformedUpstream) as caught:
        stream_all(openai_upstream, chat(), into=received)
    assert caught.value.status == 502
    assert text_of(received) == "Hello"
    assert all(chunk.finish_reason is None for chunk in received)


def test_a_whole_json_completion_from_a_server_that_ignores_stream_is_accepted(
    openai_upstream,
):
    openai_upstream.reset(ignore_stream=True, text="Answered whole.",
                          tool_call={"name": "lookup", "arguments": {"q": "x"}})
    chunks = stream_all(openai_upstream, chat())
    assert openai_upstream.requests[-1].body["stream"] is True
    assert text_of(chunks) == "Answered whole."
    calls = assembled_tool_calls(chunks)
    assert calls[0]["name"] == "lookup" and json.loads(calls[0]["arguments"]) == {"q": "x"}
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None and last.usage.completion_tokens == 3


def test_json_that_is_not_a_chat_completion_is_a_502(openai_upstream):
    openai_upstream.reset(raw_reply='{"status": "ok"}', raw_content_type="application/json")
    with pytest.raises(MalformedUpstream):
        stream_all(openai_upstream, chat())


def test_an_in_stream_error_about_the_request_is_the_callers_400_and_not_retried(
    openai_upstream,
):
    # vLLM reports a failure after the 200 as an `error` event with an HTTP-like code.
    openai_upstream.reset(raw_reply=sse({"error": {"message": "prompt is too long",
                                                   "code": 400}}, done=False))
    with pytest.raises(UpstreamError) as caught:
        stream_all(openai_upstream, chat())
    assert caught.value.status == 400
    assert "prompt is too long" in str(caught.value)
    assert len(openai_upstream.requests) == 1


def test_an_in_stream_server_error_before_output_is_retried_then_unavailable(openai_upstream):
    openai_upstream.reset(raw_reply=sse({"error": {"message": "overloaded"}}, done=False))
    with pytest.raises(UpstreamUnavailable) as caught:
        stream_all(openai_upstream, chat(), max_retries=1)
    assert "overloaded" in str(caught.value)
    assert len(openai_upstream.requests) == 2


def test_an_in_stream_error_after_output_is_a_502_and_not_retried(openai_upstream):
    openai_upstream.reset(raw_reply=sse(content("Half "), {"error": {"message": "boom"}},
                                        done=False))
    received: list[ChatChunk] = []
    with pytest.raises(UpstreamError) as caught:
        stream_all(openai_upstream, chat(), into=received, max_retries=3)
    assert not isinstance(caught.value, UpstreamUnavailable)
    assert caught.value.status == 502
    assert text_of(received) == "Half "
    assert len(openai_upstream.requests) == 1


def test_events_split_across_reads_with_crlf_and_comments_parse_and_usage_comes_last(
    openai_upstream,
):
    usage_chunk = {"object": "chat.completion.chunk", "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}
    body = (": keep-alive\r\n\r\n"
            + sse(content("Hel"), content("lo", finish="length"), usage_chunk,
                  newline="\r\n").replace("data: ", "data:", 1))
    # Cut inside a JSON payload and inside a line ending, sent 20 ms apart: the parser
    # must join what arrives in separate reads.
    cuts = [body.index("Hel") + 1, body.index("length") + 2, body.index("usage") - 1]
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    openai_upstream.reset(raw_reply=pieces, gap_ms=20)
    chunks = stream_all(openai_upstream, chat())
    assert [c.text for c in chunks if c.text] == ["Hel", "lo"]
    last = chunks[-1]
    # The finish came one event before the usage; both end the stream together.
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 2)
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])


def test_the_embedder_returns_one_vector_per_text_in_order(servers):
    upstream = servers["openai"]
    upstream.reset()
    embedder = OpenAIEmbedder("text-embedding-3-small", 12, API_KEY, upstream.base_url)
    vectors = embedder.embed(["alpha", "beta", "alpha"])
    embedder.close()
    assert len(vectors) == 3 and all(len(v) == 12 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert upstream.requests[-1].body["dimensions"] == 12


def test_the_embedder_rejects_vectors_of_the_wrong_dimension(servers):
    upstream = servers["openai"]
    upstream.reset(embedding_dimension=8)
    embedder = OpenAIEmbedder("local-embedder", 384, None, upstream.base_url)
    with pytest.raises(UpstreamError):
        embedder.embed(["alpha"])
    embedder.close()
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
