"""The model registry through real processes: admin CRUD, routing, fallbacks, upstream errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.integration.gateway import UPSTREAM_KEY, new_user_key, register_model


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", text="Hello from upstream") as upstream:
        yield upstream


@pytest.fixture
def upstream(fake_openai: FakeUpstream) -> FakeUpstream:
    fake_openai.reset(text="Hello from upstream")
    return fake_openai


def chat(stack: Any, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{stack.base_url}/v1/chat/completions", json=body,
                      headers=stack.headers, timeout=30)


def test_admin_creates_reads_lists_updates_and_deletes_a_model(stack, upstream):
    created = register_model(stack, upstream.base_url, description="first")
    model_id = created["id"]
    assert created["has_api_key"] is True and "api_key" not in created
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=10) as http:
        assert http.get(f"/v1/admin/models/{model_id}").json()["description"] == "first"
        listed = http.get("/v1/admin/models").json()["data"]
        assert model_id in [m["id"] for m in listed]
        updated = http.put(f"/v1/admin/models/{model_id}",
                           json={"description": "second", "output_price_per_mtok": 9})
        assert updated.status_code == 200, updated.text
        assert updated.json()["description"] == "second"
        assert updated.json()["output_price_per_mtok"] == 9
        assert updated.json()["has_api_key"] is True  # left out: kept
        public = http.get(f"/v1/models/{model_id}").json()
        assert public["object"] == "model" and public["context_window"] == 32_000
        assert public["pricing"]["output_per_mtok"] == 9 and public["status"] == "available"
        assert model_id in [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert http.delete(f"/v1/admin/models/{model_id}").status_code == 204
        assert http.get(f"/v1/admin/models/{model_id}").status_code == 404
        assert http.get(f"/v1/models/{model_id}").status_code == 404


def test_the_upstream_key_is_never_returned_by_any_route(stack, upstream):
    model_id = register_model(stack, upstream.base_url)["id"]
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=10) as http:
        for path in ("/v1/admin/models", f"/v1/admin/models/{model_id}", "/v1/models",
                     f"/v1/models/{model_id}"):
            assert UPSTREAM_KEY not in http.get(path).text
        cleared = http.put(f"/v1/admin/models/{model_id}", json={"api_key": None})
        assert cleared.json()["has_api_key"] is False


def test_the_upstream_receives_the_registered_key_and_upstream_model(stack, upstream):
    model_id = register_model(stack, upstream.base_url, upstream_model="gpt-upstream")["id"]
    response = chat(stack, model_id)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from upstream"
    assert response.json()["model"] == model_id
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body["model"] == "gpt-upstream"


def test_the_models_output_cap_is_sent_upstream_when_the_request_names_none(stack, upstream):
    model_id = register_model(stack, upstream.base_url, max_output_tokens=77)["id"]
    assert chat(stack, model_id).status_code == 200
    assert upstream.requests[-1].body["max_tokens"] == 77
    # A request within the cap is sent as asked, under the field it used.
    assert chat(stack, model_id, max_completion_tokens=5).status_code == 200
    sent = upstream.requests[-1].body
    assert sent["max_completion_tokens"] == 5 and "max_tokens" not in sent


def test_a_non_admin_gets_403_from_every_admin_model_route(stack, upstream):
    key = new_user_key(stack)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as http:
        for method, path in (("POST", "/v1/admin/models"), ("GET", "/v1/admin/models"),
                             ("GET", "/v1/admin/models/x"), ("PUT", "/v1/admin/models/x"),
                             ("DELETE", "/v1/admin/models/x")):
            response = http.request(method, path, json={} if method in ("POST", "PUT")
                                    else None)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "PERMISSION_DENIED"
        assert http.get("/v1/models").status_code == 200


def test_invalid_registrations_are_rejected(stack, upstream):
    with httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=10) as http:
        dev = http.post("/v1/admin/models", json={"id": "dev/echo", "provider": "dev",
                                                  "upstream_model": "echo"})
        assert dev.status_code == 409
        bad_fallback = http.post("/v1/admin/models", json={
            "id": "with-missing-fallback", "provider": "openai", "upstream_model": "x",
            "fallbacks": ["no-such-model"]})
        assert bad_fallback.status_code == 422
        bad_provider = http.post("/v1/admin/models", json={
            "id": "bad-provider", "provider": "cohere", "upstream_model": "x"})
        assert bad_provider.status_code == 422
    model_id = register_model(stack, upstream.base_url)["id"]
    again = httpx.post(f"{stack.base_url}/v1/admin/models", headers=stack.headers,
                       json={"id": model_id, "provider": "openai", "upstream_model": "x"})
    assert again.status_code == 409


def test_a_disabled_model_answers_503_until_enabled_again(stack, upstream):
    model_id = register_model(stack, upstream.base_url, enabled=False)["id"]
    response = chat(stack, model_id)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    httpx.put(f"{stack.base_url}/v1/admin/models/{model_id}", json={"enabled": True},
              headers=stack.headers)
    assert chat(stack, model_id).status_code == 200


def test_the_fallback_answers_when_the_primary_is_down(stack, upstream):
    with FakeUpstream("openai", text="from the fallback") as backup:
        fallback_id = register_model(stack, backup.base_url)["id"]
        # Port 9 (discard) refuses connections: the primary is down before any output.
        primary_id = register_model(stack, "http://127.0.0.1:9/v1",
                                    fallbacks=[fallback_id])["id"]
        response = chat(stack, primary_id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == "from the fallback"
        assert body["model"] == fallback_id


def test_an_upstream_401_is_a_502_that_never_shows_the_upstream_key(stack, upstream):
    upstream.reset(error_status=401)
    model_id = register_model(stack, upstream.base_url)["id"]
    for stream in (False, True):
        response = chat(stack, model_id, stream=stream)
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_error"
        assert UPSTREAM_KEY not in response.text
        assert "SECRET" not in response.text


def test_an_upstream_429_is_a_429_with_retry_after(stack, upstream):
    upstream.reset(error_status=429, retry_after_s=7)
    model_id = register_model(stack, upstream.base_url)["id"]
    for stream in (False, True):
        response = chat(stack, model_id, stream=stream)
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_an_upstream_that_hangs_past_the_model_timeout_is_a_504(stack, upstream):
    upstream.reset(hang=True)
    model_id = register_model(stack, upstream.base_url, timeout_s=0.5)["id"]
    started = time.monotonic()
    response = chat(stack, model_id)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 20


def test_the_models_file_seeds_the_registry_without_clobbering_admin_edits(
        start_stack, tmp_path, upstream):
    model_id = f"seeded-{int(time.time() * 1000)}"
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        f'[[models]]\nid = "{model_id}"\nprovider = "openai"\nupstream_model = "seeded"\n'
        f'base_url = "{upstream.base_url}"\napi_key = "sk-from-file"\n'
        f'input_price_per_mtok = 1.0\ndescription = "from the file"\n')
    first = start_stack(env={"MODELS_FILE": str(models_file)})
    with httpx.Client(base_url=first.base_url, headers=first.headers, timeout=10) as http:
        seeded = http.get(f"/v1/admin/models/{model_id}").json()
        assert seeded["source"] == "seed" and seeded["has_api_key"] is True
        assert chat(first, model_id).json()["choices"][0]["message"]["content"] == (
            "Hello from upstream")
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-from-file"
        http.put(f"/v1/admin/models/{model_id}", json={"description": "edited by an admin"})
    first.stop()
    second = start_stack(env={"MODELS_FILE": str(models_file)})
    kept = httpx.get(f"{second.base_url}/v1/admin/models/{model_id}", headers=second.headers)
    assert kept.json()["description"] == "edited by an admin"
    assert kept.json()["source"] == "admin"
