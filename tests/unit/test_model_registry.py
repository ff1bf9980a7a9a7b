"""Registry pieces that need no services: seeding specs, key sealing, fallbacks, pricing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from pipelines.chat import complete_with_fallbacks
from pipelines.errors import InvalidInput, UpstreamError, UpstreamUnavailable
from pipelines.model_seed import load_models_file, seed_specs
from pipelines.models import DEV_MODELS, ModelInfo
from pipelines.ports import ChatChunk, Usage
from pipelines.secretbox import SecretBox


def test_a_sealed_key_opens_only_with_the_same_secret():
    token = SecretBox("one").seal("sk-secret")
    assert "sk-secret" not in token
    assert SecretBox("one").open(token) == "sk-secret"
    assert SecretBox("two").open(token) is None


def test_provider_keys_seed_the_default_models_with_their_key_and_base_url():
    specs = seed_specs(openai_api_key="sk-o", openai_base_url="http://local/v1",
                       anthropic_api_key=None, anthropic_base_url=None, models_file=None)
    ids = [spec.id for spec in specs]
    assert "gpt-4o-mini" in ids and not any(i.startswith("claude") for i in ids)
    assert all(spec.api_key and spec.api_key.get_secret_value() == "sk-o" for spec in specs)
    assert all(spec.base_url == "http://local/v1" for spec in specs)
    both = seed_specs(openai_api_key=None, openai_base_url=None, anthropic_api_key="sk-a",
                      anthropic_base_url=None, models_file=None)
    assert "claude-3-5-haiku-latest" in [spec.id for spec in both]


def test_a_json_models_file_overrides_a_default_of_the_same_id(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps([
        {"id": "gpt-4o-mini", "provider": "openai", "upstream_model": "other",
         "output_price_per_mtok": 1},
        {"id": "local/llama", "provider": "openai", "upstream_model": "llama3",
         "base_url": "http://127.0.0.1:11434/v1"}]))
    specs = {s.id: s for s in seed_specs(openai_api_key="sk", openai_base_url=None,
                                         anthropic_api_key=None, anthropic_base_url=None,
                                         models_file=str(path))}
    assert specs["gpt-4o-mini"].upstream_model == "other"
    assert specs["local/llama"].base_url == "http://127.0.0.1:11434/v1"


def test_a_broken_models_file_fails_loudly(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nid = "x"\nprovider = "cohere"\nupstream_model = "y"\n')
    with pytest.raises(InvalidInput):
        load_models_file(path)
    with pytest.raises(InvalidInput):
        load_models_file(tmp_path / "missing.json")


def test_cost_is_exact_per_million_tokens():
    info = ModelInfo(id="m", provider="openai", upstream_model="m", context_window=1,
                     owned_by="openai", input_price_per_mtok=0.15,
                     output_price_per_mtok=0.6)
    assert info.cost_usd(1_000_000, 0) == Decimal("0.15")
    assert info.cost_usd(1234, 567) == (Decimal(1234) * Decimal("0.15")
                                        + Decimal(567) * Decimal("0.6")) / 1_000_000
    assert DEV_MODELS["dev/echo"].cost_usd(10, 10) == 0


class _Down:
    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        raise UpstreamUnavailable("down")
        yield ChatChunk()  # never reached; makes this an async generator like a provider


class _Text:
    def __init__(self, text: str, fail: bool = False) -> None:
        self.text, self.fail = text, fail

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(text=self.text)
        if self.fail:
            raise UpstreamError("broke after output", status=502)
        yield ChatChunk(finish_reason="stop", usage=Usage(1, 1))


class _Events:
    """An emit that records what it publishes and never reports a cancellation."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, type_: str, data: dict[str, Any]) -> bool:
        self.events.append((type_, data))
        return False


def fallbacks(candidates: list[tuple[str, Any]], emit: _Events) -> dict[str, Any]:
    request = {"model": candidates[0][0], "messages": []}
    return asyncio.run(complete_with_fallbacks(candidates, request, emit))


def test_the_next_fallback_answers_when_a_model_is_down_before_output():
    emit = _Events()
    result = fallbacks([("primary", _Down()), ("second", _Down()), ("third", _Text("hi"))], emit)
    assert result["model"] == "third" and result["fallback_from"] == "primary"
    assert result["content"] == "hi"
    assert [(t, d["text"]) for t, d in emit.events] == [("delta", "hi")]


def test_a_failure_after_output_does_not_fall_back():
    emit = _Events()
    with pytest.raises(UpstreamError):
        fallbacks([("a", _Text("partial", fail=True)), ("b", _Text("other"))], emit)
    assert [d["text"] for _, d in emit.events] == ["partial"]
    with pytest.raises(UpstreamUnavailable):
        fallbacks([("a", _Down())], _Events())
