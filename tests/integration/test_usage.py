"""Usage and cost: each completed chat job is recorded once, priced from the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.integration.gateway import new_user_key, register_model

INPUT_PRICE, OUTPUT_PRICE = 2.5, 10.0  # USD per million tokens


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", text="one two three four five") as fake:
        yield fake


def chat(stack: Any, key: str, model: str, text: str = "count to five") -> dict[str, Any]:
    response = httpx.post(f"{stack.base_url}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def usage(stack: Any, key: str, path: str = "/v1/usage", **params: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_usage_sums_tokens_and_prices_them_with_the_registry_prices(stack, upstream):
    model_id = register_model(stack, upstream.base_url, input_price_per_mtok=INPUT_PRICE,
                              output_price_per_mtok=OUTPUT_PRICE)["id"]
    key = new_user_key(stack)
    answers = [chat(stack, key, model_id, text) for text in ("a", "b c d", "e f g h i j")]
    chat(stack, key, "dev/echo", "free words here")
    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    assert completion == 15
    expected_cost = (prompt * INPUT_PRICE + completion * OUTPUT_PRICE) / 1_000_000

    report = usage(stack, key)
    by_model = {group["key"]: group for group in report["by_model"]}
    mine = by_model[model_id]
    assert mine["requests"] == 3
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (prompt, completion)
    assert mine["total_tokens"] == prompt + completion
    assert mine["cost_usd"] == pytest.approx(expected_cost, abs=1e-9)
    assert by_model["dev/echo"]["cost_usd"] == 0
    assert by_model["dev/echo"]["completion_tokens"] == 3
    assert report["total"]["requests"] == 4
    assert report["total"]["cost_usd"] == pytest.approx(expected_cost, abs=1e-9)
    today = datetime.now(UTC).date().isoformat()
    assert [day["key"] for day in report["by_day"]] == [today]
    assert report["by_day"][0]["requests"] == 4


def test_the_job_result_carries_the_same_cost_as_the_usage_record(stack, upstream):
    model_id = register_model(stack, upstream.base_url, input_price_per_mtok=INPUT_PRICE,
                              output_price_per_mtok=OUTPUT_PRICE)["id"]
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=30) as http:
        job = http.post("/v1/jobs", json={"kind": "chat", "input": {
            "model": model_id, "messages": [{"role": "user", "content": "hi"}]}}).json()
        for _ in range(200):
            current = http.get(f"/v1/jobs/{job['id']}").json()
            if current["status"] == "succeeded":
                break
            time.sleep(0.05)
    result = current["result"]
    prompt, completion = result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"]
    assert result["cost_usd"] == pytest.approx(
        (prompt * INPUT_PRICE + completion * OUTPUT_PRICE) / 1e6, abs=1e-12)


def test_usage_is_only_the_callers_and_filters_by_date(stack, upstream):
    first, second = new_user_key(stack), new_user_key(stack)
    chat(stack, first, "dev/echo", "alpha beta")
    assert usage(stack, second)["total"]["requests"] == 0
    assert usage(stack, first)["total"]["requests"] == 1
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert usage(stack, first, to=yesterday)["total"]["requests"] == 0
    assert usage(stack, first, **{"from": tomorrow})["total"]["requests"] == 0
    assert usage(stack, first, **{"from": yesterday, "to": tomorrow})["total"]["requests"] == 1
    bad = httpx.get(f"{stack.base_url}/v1/usage", params={"from": "last tuesday"},
                    headers={"Authorization": f"Bearer {first}"})
    assert bad.status_code == 422


def test_admin_usage_reports_tokens_per_owner_and_key(stack, upstream):
    key = new_user_key(stack)
    chat(stack, key, "dev/echo", "one two")
    chat(stack, key, "dev/echo", "three")
    report = usage(stack, stack.admin_key, "/v1/admin/usage")["tokens"]
    assert report["total"]["requests"] >= 2
    by_key = [group for group in report["by_key"] if group["requests"] == 2
              and group["completion_tokens"] == 3]
    assert by_key, report["by_key"]
    only_that_key = usage(stack, stack.admin_key, "/v1/admin/usage",
                          key_id=by_key[0]["key"])["tokens"]
    assert only_that_key["total"]["requests"] == 2
    non_admin = httpx.get(f"{stack.base_url}/v1/admin/usage",
                          headers={"Authorization": f"Bearer {key}"})
    assert non_admin.status_code == 403
