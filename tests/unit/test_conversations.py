"""History building, token accounting and prune selection, with a fake ChatModel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from pipelines.conversations import (
    conversation_request,
    flatten_content,
    history,
    message_tokens,
    new_turns,
    token_usage,
)
from pipelines.errors import InvalidInput
from pipelines.ports import ChatChunk, Usage
from pipelines.prune import (
    SUMMARISE_INSTRUCTIONS,
    select_for_prune,
    summarise,
    summary_request,
    transcript,
)
from pipelines.tokens import count_message_tokens


@dataclass
class StoredTurn:
    role: str
    content: str
    tokens: int = 0
    id: int = 0


def turns(*pairs: tuple[str, str]) -> list[StoredTurn]:
    return [StoredTurn(role, content, message_tokens(role, content, "dev/echo"), i + 1)
            for i, (role, content) in enumerate(pairs)]


class FakeSummariser:
    """Answers every request with a fixed text, in two chunks, and remembers the request."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        self.requests.append(request)
        half = len(self.answer) // 2
        yield ChatChunk(text=self.answer[:half])
        yield ChatChunk(text=self.answer[half:])
        yield ChatChunk(finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=2))


def test_history_is_the_system_prompt_then_every_turn_in_order():
    stored = turns(("user", "hi"), ("assistant", "hello"), ("user", "how are you?"))
    assert history("Be brief.", stored) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]


def test_history_without_a_system_prompt_starts_with_the_first_turn():
    assert history(None, turns(("user", "hi")))[0] == {"role": "user", "content": "hi"}
    assert history("", []) == []


def test_a_conversation_request_keeps_the_knobs_and_appends_the_new_messages_last():
    base = {"model": "dev/echo", "max_tokens": 5, "dev_options": {"token_delay_ms": 1}}
    new = [{"role": "user", "content": "next"}]
    request = conversation_request(base, "sys", turns(("user", "a"), ("assistant", "b")), new,
                                   "c-1")
    assert request["max_tokens"] == 5 and request["dev_options"] == {"token_delay_ms": 1}
    assert request["conversation_id"] == "c-1"
    assert [m["content"] for m in request["messages"]] == ["sys", "a", "b", "next"]


def test_message_tokens_add_up_to_the_prompt_count_less_the_reply_priming():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"}]
    each = sum(message_tokens(m["role"], m["content"], "gpt-4o") for m in messages)
    assert each == count_message_tokens(messages, "gpt-4o") - count_message_tokens([], "gpt-4o")


def test_new_turns_count_tokens_and_flatten_text_parts():
    rows = new_turns([{"role": "user", "content": [
        {"type": "text", "text": "look "}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "here"}]}], "dev/echo")
    assert rows == [{"role": "user", "content": "look here",
                     "tokens": message_tokens("user", "look here", "dev/echo")}]
    assert flatten_content(None) == ""


@pytest.mark.parametrize("role", ["assistant", "tool"])
def test_new_turns_refuse_replies_the_conversation_already_holds(role):
    with pytest.raises(InvalidInput):
        new_turns([{"role": role, "content": "x"}], "dev/echo")


def test_token_usage_sums_by_role_and_measures_against_the_context_window():
    stored = turns(("user", "one two three"), ("assistant", "four five"), ("user", "six"))
    usage = token_usage("dev/echo", "Be brief.", stored, context_limit=1000)
    system = message_tokens("system", "Be brief.", "dev/echo")
    assert usage["by_role"] == {
        "system": system,
        "user": stored[0].tokens + stored[2].tokens,
        "assistant": stored[1].tokens,
    }
    assert usage["total"] == sum(usage["by_role"].values())
    assert usage["utilization_percent"] == round(100 * usage["total"] / 1000, 2)


def test_token_usage_without_a_known_context_window_has_no_utilisation():
    usage = token_usage("gone/model", None, [], context_limit=None)
    assert usage["total"] == 0 and usage["utilization_percent"] is None


@pytest.mark.parametrize(
    ("count", "keep_last", "pruned", "kept"),
    [(10, 4, 6, 4), (5, 0, 5, 0), (4, 4, 0, 4), (3, 10, 0, 3), (0, 2, 0, 0), (1, 0, 1, 0)],
)
def test_prune_selects_all_but_the_last_keep_last_turns(count, keep_last, pruned, kept):
    stored = turns(*[("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(count)])
    selection = select_for_prune(stored, keep_last)
    assert (len(selection.pruned), len(selection.kept)) == (pruned, kept)
    assert selection.pruned + selection.kept == stored
    assert selection.pruned_tokens == sum(t.tokens for t in selection.pruned)


def test_the_summary_request_gives_the_model_a_transcript_of_the_pruned_turns():
    stored = turns(("user", "my name is Ada"), ("assistant", "hello Ada"))
    request = summary_request("dev/lorem", stored, max_tokens=64)
    assert request["model"] == "dev/lorem" and request["max_tokens"] == 64
    assert request["messages"][0] == {"role": "system", "content": SUMMARISE_INSTRUCTIONS}
    assert request["messages"][1]["content"] == transcript(stored)
    assert transcript(stored) == "user: my name is Ada\n\nassistant: hello Ada"


def test_summarise_streams_the_summary_as_deltas_and_returns_it_stripped():
    model = FakeSummariser("  Ada introduced herself.  ")
    events: list[tuple[str, dict[str, Any]]] = []

    async def emit(type: str, data: dict[str, Any]) -> bool:
        events.append((type, data))
        return False

    summary = asyncio.run(summarise(model, "fake", turns(("user", "I am Ada")), emit,
                                    max_tokens=32))
    assert summary == "Ada introduced herself."
    assert "".join(d["text"] for t, d in events if t == "delta") == model.answer
    assert model.requests[0]["max_tokens"] == 32
