"""The error boundary answers unexpected errors, but a client that hung up gets nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from api.errors import ErrorBoundaryMiddleware


def _run(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [],
             "query_string": b"", "state": {}}
    asyncio.run(ErrorBoundaryMiddleware(app)(scope, receive, send))
    return sent


def test_a_client_that_hung_up_mid_body_is_neither_answered_nor_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ClientDisconnect()

    with caplog.at_level(logging.WARNING):
        sent = _run(app)
    assert sent == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_unexpected_error_is_answered_with_a_json_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    sent = _run(app)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 500
    assert b"INTERNAL_ERROR" in sent[1]["body"]
