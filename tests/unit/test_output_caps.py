"""What one request may make a job produce: output tokens per model, the dev models' switch,
a job's result size, and listings that leave the large columns out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelines.db import jobs as jobs_db
from pipelines.errors import MaxTokensTooLarge, ModelNotFound, ResultTooLarge
from pipelines.models import (
    AsyncModelRegistry,
    ModelInfo,
    check_output_tokens,
    dev_models,
    output_token_limit,
)
from pipelines.output_limits import check_result_size
from pipelines.secretbox import SecretBox

CAPPED = ModelInfo(id="m", provider="openai", upstream_model="m", context_window=8192,
                   owned_by="openai", max_output_tokens=100)
UNCAPPED = ModelInfo(id="u", provider="openai", upstream_model="u", context_window=8192,
                     owned_by="openai")


def test_a_request_over_the_models_cap_is_refused_with_the_field_it_used() -> None:
    with pytest.raises(MaxTokensTooLarge) as caught:
        check_output_tokens(CAPPED, {"max_completion_tokens": 101, "max_tokens": 5})
    assert caught.value.code == "VALIDATION_FAILED"
    assert caught.value.details == {"field": "max_completion_tokens", "max": 100, "found": 101}
    check_output_tokens(CAPPED, {"max_tokens": 100})
    check_output_tokens(UNCAPPED, {"max_tokens": 40_000_000})


@pytest.mark.parametrize(("info", "request_", "limit"), [
    (CAPPED, {}, 100),
    (CAPPED, {"max_tokens": 7}, 7),
    (CAPPED, {"max_tokens": 700}, 100),
    (UNCAPPED, {}, None),
    (UNCAPPED, {"max_tokens": 7}, 7),
])
def test_the_worker_sends_the_requests_max_tokens_at_most_the_models_cap(
    info: ModelInfo, request_: dict[str, Any], limit: int | None,
) -> None:
    assert output_token_limit(info, request_) == limit


def test_the_dev_models_carry_the_dev_cap_and_are_absent_when_switched_off() -> None:
    on = dev_models(enabled=True, max_output_tokens=4096)
    assert sorted(on) == ["dev/echo", "dev/lorem", "dev/tools"]
    assert {info.max_output_tokens for info in on.values()} == {4096}
    assert dev_models(enabled=False, max_output_tokens=4096) == {}


def test_a_switched_off_dev_model_is_not_found_and_not_listed() -> None:
    # No engine: a dev id is answered before the registry table is read.
    registry = AsyncModelRegistry(None, SecretBox("k"), dev={})  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound):
        asyncio.run(registry.get("dev/echo"))
    assert registry._all() == []


def test_a_result_over_the_limit_is_refused_with_its_code() -> None:
    with pytest.raises(ResultTooLarge) as caught:
        check_result_size({"content": "x" * 2000}, 1000)
    assert caught.value.code == "RESULT_TOO_LARGE"
    assert caught.value.details["max"] == 1000
    assert check_result_size({"content": "x" * 900}, 1000) is None


@pytest.mark.parametrize("statement", [
    jobs_db.list_for_owner("owner", limit=10),
    jobs_db.list_all(limit=10, owner_id="owner"),
])
def test_job_listings_read_neither_input_nor_result(statement: Any) -> None:
    selected = {column.name for column in statement.selected_columns}
    assert {"id", "status", "error", "created_at"} <= selected
    assert not selected & {"input", "result"}
