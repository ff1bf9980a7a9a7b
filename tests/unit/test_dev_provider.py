import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pipelines.errors import ModelNotFound, UpstreamError, UpstreamUnavailable
from pipelines.ports import ChatChunk
from pipelines.providers.dev import DEFAULT_LOREM_TOKENS, DevChatModel
from pipelines.tokens import count_message_tokens


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


async def _drain(stream: AsyncIterator[ChatChunk], into: list[ChatChunk]) -> list[ChatChunk]:
    async for chunk in stream:
        into.append(chunk)
    return into


def collect(stream: AsyncIterator[ChatChunk], into: list[ChatChunk] | None = None,
            ) -> list[ChatChunk]:
    """Every chunk of `stream`; with `into`, what arrived before a failure stays readable."""
    return asyncio.run(_drain(stream, [] if into is None else into))


def texts(chunks: list[ChatChunk]) -> list[str]:
    return [c.text for c in chunks if c.text]


def test_echo_streams_the_last_user_message_word_by_word_and_joins_back_exactly():
    message = "  Hello,  wide\nworld! "
    chunks = collect(DevChatModel("dev/echo").stream(user(message)))
    assert texts(chunks) == ["  Hello,  ", "wide\n", "world! "]
    assert "".join(texts(chunks)) == message
    assert chunks[-1].finish_reason == "stop"


def test_echo_repeats_the_last_user_message_not_earlier_ones():
    request = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second one"}]},
        ]
    }
    assert "".join(texts(collect(DevChatModel("echo").stream(request)))) == "second one"


def test_usage_counts_prompt_tokens_and_the_tokens_emitted():
    request = user("one two three")
    last = collect(DevChatModel("dev/echo").stream(request))[-1]
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert last.usage.prompt_tokens == count_message_tokens(request["messages"])


def test_lorem_streams_sixteen_words_by_default():
    chunks = collect(DevChatModel("dev/lorem").stream(user("go")))
    assert len(texts(chunks)) == DEFAULT_LOREM_TOKENS
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == DEFAULT_LOREM_TOKENS
    assert chunks[-1].finish_reason == "stop"


def test_lorem_streams_max_tokens_or_max_completion_tokens_words_and_ends_with_length():
    by_max_tokens = collect(DevChatModel("dev/lorem").stream(user("go") | {"max_tokens": 5}))
    assert len(texts(by_max_tokens)) == 5
    assert by_max_tokens[-1].finish_reason == "length"
    request = user("go") | {"max_completion_tokens": 40}
    assert len(texts(collect(DevChatModel("dev/lorem").stream(request)))) == 40


def test_echo_stops_at_max_tokens_with_finish_reason_length():
    chunks = collect(DevChatModel("dev/echo").stream(user("a b c d") | {"max_tokens": 2}))
    assert texts(chunks) == ["a ", "b "]
    assert chunks[-1].finish_reason == "length"


def test_token_delay_paces_the_stream():
    request = user("a b c d e") | {"dev_options": {"token_delay_ms": 20}}
    started = time.perf_counter()
    collect(DevChatModel("dev/echo").stream(request))
    assert time.perf_counter() - started >= 0.08


def test_a_paced_stream_waits_on_the_event_loop_so_other_streams_run_meanwhile():
    # One worker process holds hundreds of streams on one loop: a model that slept in the
    # thread (time.sleep) would run each stream to its end before the next could start.
    request = user("a b c") | {"dev_options": {"token_delay_ms": 5}}
    order: list[str] = []

    async def follow(name: str) -> None:
        async for chunk in DevChatModel("dev/echo").stream(request):
            if chunk.text:
                order.append(f"{name}{chunk.text.strip()}")

    async def both() -> None:
        await asyncio.gather(follow("x"), follow("y"))

    asyncio.run(both())
    assert sorted(order) == ["xa", "xb", "xc", "ya", "yb", "yc"]
    # y's first word came while x was waiting to send its second.
    assert order.index("ya") < order.index("xb")


def test_fail_after_tokens_breaks_the_stream_with_an_upstream_error_after_output():
    request = user("a b c d e") | {"dev_options": {"fail_after_tokens": 2}}
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamError) as caught:
        collect(DevChatModel("dev/echo").stream(request), into=seen)
    assert texts(seen) == ["a ", "b "]
    assert caught.value.status == 502


def test_fail_after_zero_tokens_is_a_transient_failure_before_any_output():
    request = user("a b") | {"dev_options": {"fail_after_tokens": 0}}
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamUnavailable):
        collect(DevChatModel("dev/echo").stream(request), into=seen)
    assert seen == []


def test_an_unknown_dev_model_is_model_not_found():
    with pytest.raises(ModelNotFound):
        DevChatModel("dev/nope")
