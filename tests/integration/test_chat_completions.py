"""`/v1/chat/completions` and `/v1/models` through the real, unmodified `openai` SDK."""

from __future__ import annotations

import json
import math
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.integration.gateway import new_user_key
from tests.integration.jobclient import (
    EventLogReader,
    assert_no_server_errors,
    client,
    poll,
    wait_status,
)

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture
def sdk(stack: Any) -> Any:
    # No SDK retries: each call must be one request, so a failure shows as it is.
    with openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.admin_key,
                       max_retries=0, timeout=15) as sdk:
        yield sdk


def _job_id(completion_id: str) -> str:
    assert completion_id.startswith("chatcmpl-")
    return str(uuid.UUID(completion_id.removeprefix("chatcmpl-")))


def test_a_non_streaming_completion_echoes_the_last_user_message(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="dev/echo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}],
    )

    assert completion.object == "chat.completion"
    assert completion.model == "dev/echo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == PROMPT
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(PROMPT.split())
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)


def test_a_streaming_completion_sends_chunks_then_usage_then_done(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="dev/echo", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PROMPT
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(PROMPT.split())
    assert all(c.usage is None for c in chunks[:-1])


def test_a_streaming_completion_without_include_usage_sends_no_usage(
    sdk: openai.OpenAI,
) -> None:
    chunks = list(sdk.chat.completions.create(
        model="dev/echo", messages=[{"role": "user", "content": "hi there"}], stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hi there"
    assert all(c.usage is None for c in chunks)


def test_dev_options_pass_through_extra_body(sdk: openai.OpenAI) -> None:
    started = time.monotonic()
    completion = sdk.chat.completions.create(
        model="dev/lorem", messages=[{"role": "user", "content": "go"}], max_tokens=5,
        extra_body={"dev_options": {"token_delay_ms": 60}},
    )

    assert completion.choices[0].message.content == "lorem ipsum dolor sit amet"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert time.monotonic() - started >= 4 * 0.06


def test_the_models_list_names_the_development_models(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}

    assert {"dev/echo", "dev/lorem"} <= set(models)
    assert models["dev/echo"].object == "model"
    assert sdk.models.retrieve("dev/lorem").id == "dev/lorem"


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_a_404_in_openai_error_shape(
    sdk: openai.OpenAI, stream: bool
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="nope/none", stream=stream,
                                    messages=[{"role": "user", "content": "hi"}])

    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert info.value.response.headers["x-request-id"]


def test_retrieving_an_unknown_model_is_a_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("nope/none")
    assert info.value.code == "model_not_found"


def test_a_wrong_key_raises_the_sdks_authentication_error(stack: Any) -> None:
    with openai.OpenAI(base_url=stack.base_url + "/v1", api_key="sy-wrong",
                       max_retries=0) as wrong, pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model="dev/echo",
                                      messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "invalid_api_key"


def test_an_upstream_failure_is_an_openai_error_not_a_500(sdk: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "dev/lorem", "messages": [{"role": "user", "content": "go"}], "max_tokens": 5,
        "extra_body": {"dev_options": {"fail_after_tokens": 2}},
    }
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(**request)
    assert info.value.status_code == 502
    assert info.value.response.json()["error"]["code"] == "upstream_error"

    stream = sdk.chat.completions.create(**request, stream=True)
    with pytest.raises(openai.APIError) as streamed:
        for _ in stream:
            pass
    assert "failed after 2 tokens" in streamed.value.message


@pytest.mark.parametrize(("content", "content_type", "status", "param"), [
    (b'{"model": "dev/echo", "messages": [', "application/json", 400, None),
    (b'{"model": "dev/echo", "messages": []}', "application/json", 422, "messages"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "application/json", 422, "model"),
    (b'{"model": "dev/echo", "messages": [{"role": "robot", "content": "hi"}]}',
     "application/json", 422, "messages.0.role"),
    (b'{"model": "dev/echo", "messages": [{"role": "user", "content": "hi"}], '
     b'"temperature": 9}', "application/json", 422, "temperature"),
    (b'{"model": "dev/echo", "messages": [{"role": "user", "content": "hi"}], '
     b'"dev_options": {"token_delay_ms": -1}}', "application/json", 422,
     "dev_options.token_delay_ms"),
    (b"model=dev/echo", "text/plain", 415, None),
])
def test_bad_chat_requests_answer_in_openai_error_shape(
    stack: Any, content: bytes, content_type: str, status: int, param: str | None
) -> None:
    with client(stack) as http:
        response = http.post("/v1/chat/completions", content=content,
                             headers={"content-type": content_type})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert response.headers["x-request-id"]


def test_a_streaming_client_that_disconnects_cancels_its_job(
    sdk: openai.OpenAI, stack: Any, redis_url: str
) -> None:
    stream = sdk.chat.completions.create(
        model="dev/lorem", messages=[{"role": "user", "content": "go"}], max_tokens=400,
        stream=True, extra_body={"dev_options": {"token_delay_ms": 25}},
    )
    ids = []
    for chunk in stream:
        ids.append(chunk.id)
        if len(ids) == 4:
            break
    stream.close()
    job_id = _job_id(ids[0])

    with client(stack) as http, EventLogReader(redis_url, stack.namespace) as log:
        poll(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled",
             timeout_s=5, what="the abandoned chat job to be cancelled")
        count = len(log.events(job_id))
        time.sleep(0.25)  # ten tokens' worth: had the worker gone on, the log would grow
        types = log.types(job_id)
        assert len(types) == count
        assert types[-1] == "cancelled"
        assert types.count("cancelled") == 1 and "succeeded" not in types
        assert types.count("delta") < 40
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def _running_chat_job(http: httpx.Client) -> dict[str, Any] | None:
    jobs = http.get("/v1/jobs", params={"kind": "chat"}).json()["data"]
    return jobs[0] if jobs and jobs[0]["status"] == "running" else None  # type: ignore[no-any-return]


def test_a_client_that_hangs_up_on_a_whole_completion_gets_its_job_cancelled(
    stack: Any,
) -> None:
    key = new_user_key(stack)  # whose only job this is
    body = json.dumps({"model": "dev/lorem", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": 100, "dev_options": {"token_delay_ms": 100}}).encode()
    url = urlsplit(stack.base_url)
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Authorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body

    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"},
                      timeout=10) as http:
        # A raw socket: the client hangs up for sure, while the job is known to run.
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(request)
            job = poll(lambda: _running_chat_job(http), timeout_s=10,
                       what="the whole completion's job to run")
        # 100 tokens at 100 ms: had nobody cancelled it, it would end `succeeded` in 10 s.
        final = wait_status(http, job["id"], timeout_s=20)

    assert final["status"] == "cancelled", final
    assert final["result"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_chat_answers_carry_the_time_spent_in_switchyard(
    stack: Any, path: str, stream: bool
) -> None:
    body = {"model": "dev/echo", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "how long did that take"}]}

    with client(stack) as http, http.stream("POST", path, json=body) as response:
        response.read()

    assert response.status_code == 200, response.text
    overhead_ms = float(response.headers["x-switchyard-overhead-ms"])
    assert math.isfinite(overhead_ms) and overhead_ms >= 0
    assert response.headers["x-job-id"]


def test_nothing_in_this_module_was_answered_with_a_500_or_a_traceback(stack: Any) -> None:
    assert_no_server_errors(stack)
