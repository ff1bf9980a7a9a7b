"""Redis or Postgres going down under a running API: every request that needs it is a 503
with Retry-After in the route's own error format (it was a 500, and the connection was
reset for the client's next request). Each test starts a private server for its stack,
lets the API's lifespan connect to it, and stops it mid-test.
"""

from __future__ import annotations

import json
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from api.devservices import create_database, run_migrations, start_postgres, start_redis
from tests.integration.conftest import PROJECT_DIR, Stack, StartStack

CHAT = {"model": "dev/echo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "dev/echo", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}


def _requests_on_one_connection(
    stack: Stack, requests: list[tuple[str, str, Any]],
) -> list[tuple[int, dict[str, str], Any]]:
    """(status, headers, JSON body) of each request, all sent on one kept-alive connection
    (failing if the server closed it in between)."""
    address = urlsplit(stack.base_url)
    client = HTTPConnection(address.hostname or "", address.port, timeout=60)
    answers = []
    try:
        for method, path, body in requests:
            headers = {**stack.headers, "Content-Type": "application/json"}
            client.request(method, path, body=None if body is None else json.dumps(body),
                           headers=headers)
            socket_used = client.sock
            response = client.getresponse()
            answers.append((response.status, {k.lower(): v for k, v in response.getheaders()},
                            json.loads(response.read())))
            assert client.sock is socket_used, f"the server closed the connection after {path}"
    finally:
        client.close()
    return answers


def _assert_unavailable(answer: tuple[int, dict[str, str], Any], fmt: str) -> None:
    status, headers, body = answer
    assert status == 503, body
    assert int(headers["retry-after"]) >= 1
    if fmt == "openai":
        assert body["error"]["code"] == "service_unavailable" and body["error"]["message"]
    elif fmt == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error", body
    else:
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE", body
        assert body["error"]["request_id"] == headers["x-request-id"]


def test_chat_while_redis_is_down_is_a_503_with_retry_after(
    start_stack: StartStack, tmp_path: Path,
) -> None:
    with start_redis(tmp_path / "redis") as redis_server:
        stack = start_stack(env={"REDIS_URL": redis_server.url, "DEV_MODELS_ENABLED": "true"})
        up = _requests_on_one_connection(stack, [("POST", "/v1/chat/completions", CHAT)])
        assert up[0][0] == 200, up
        redis_server.stop()
        down = _requests_on_one_connection(stack, [
            ("POST", "/v1/chat/completions", CHAT),
            ("POST", "/v1/messages", MESSAGES),
            ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
        ])
    _assert_unavailable(down[0], "openai")
    _assert_unavailable(down[1], "anthropic")
    _assert_unavailable(down[2], "openai")


def test_requests_while_postgres_is_down_are_a_503_with_retry_after(
    start_stack: StartStack, tmp_path: Path,
) -> None:
    with start_postgres(tmp_path / "pg", durable=False) as postgres:
        database_url = create_database(postgres.url, "outage")
        run_migrations(database_url, PROJECT_DIR)
        stack = start_stack(env={"DATABASE_URL": database_url, "DEV_MODELS_ENABLED": "true"})
        up = _requests_on_one_connection(stack, [("GET", "/v1/jobs", None)])
        assert up[0][0] == 200, up
        postgres.stop()
        down = _requests_on_one_connection(stack, [
            # The first finds its pooled connection closed, the next cannot open one.
            ("GET", "/v1/jobs", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/chat/completions", CHAT),
            ("POST", "/v1/messages", MESSAGES),
        ])
    _assert_unavailable(down[0], "own")
    _assert_unavailable(down[1], "own")
    _assert_unavailable(down[2], "openai")
    _assert_unavailable(down[3], "anthropic")

