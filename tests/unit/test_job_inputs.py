"""POST /v1/jobs checks every kind's input with the payload model its actor validates with
(schemas/job_kinds.py), so a compare or prune job the worker could only fail is refused at
the edge: 422 VALIDATION_FAILED naming `input.<field>`.

The real route runs in a bare Starlette app with the real error handlers; only the
submission behind it is a recording fake (queueing is the integration tests' business).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from api.context import Principal
from api.errors import ApiError, handle_api_error, handle_domain_error
from api.routes import jobs as jobs_route
from pipelines.errors import DomainError

CONVERSATION = str(uuid.uuid4())
COMPARE = {"prompt": "Say hi", "models": ["dev/echo", "dev/lorem"]}


class _AsCaller:
    """Puts a principal where the auth middleware would."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["principal"] = Principal(id="user-1", role="user")
        await self.app(scope, receive, send)


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    async def submit_job(services: Any, **job: Any) -> tuple[Any, bool]:
        calls.append(job)
        now = datetime.now(UTC)
        row = SimpleNamespace(id=str(uuid.uuid4()), kind=job["kind"], status="queued",
                              progress=0.0, attempts=0, error=None, parent_id=None,
                              created_at=now, started_at=None, finished_at=None,
                              input=job["input"], result=None)
        return row, True

    monkeypatch.setattr(jobs_route, "submit_job", submit_job)
    return calls


@pytest.fixture
def client(submitted: list[dict[str, Any]]) -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/v1/jobs", jobs_route.create_job, methods=["POST"])],
                    exception_handlers={ApiError: handle_api_error,
                                        DomainError: handle_domain_error})
    app.state.services = SimpleNamespace(settings=SimpleNamespace(max_json_body_bytes=1 << 20))
    with TestClient(_AsCaller(app)) as test_client:
        yield test_client


@pytest.mark.parametrize(("kind", "input", "field"), [
    ("compare", {"prompt": "Say hi", "models": ["dev/echo"]}, "input.models"),
    ("compare", {"prompt": "Say hi", "models": ["dev/echo", "dev/echo"]}, "input.models"),
    ("compare", {"prompt": "", "models": ["dev/echo", "dev/lorem"]}, "input.prompt"),
    ("compare", {"models": ["dev/echo", "dev/lorem"]}, "input.prompt"),
    ("compare", COMPARE | {"temperature": 5}, "input.temperature"),
    ("compare", COMPARE | {"surprise": True}, "input.surprise"),
    ("prune", {}, "input.conversation_id"),
    ("prune", {"conversation_id": CONVERSATION, "keep_last": -1}, "input.keep_last"),
    ("prune", {"conversation_id": CONVERSATION, "max_summary_tokens": 1},
     "input.max_summary_tokens"),
    ("prune", {"conversation_id": CONVERSATION, "model": ""}, "input.model"),
])
def test_an_invalid_compare_or_prune_input_is_a_422_naming_the_input_field_and_not_submitted(
    client: TestClient, submitted: list[dict[str, Any]], kind: str, input: dict[str, Any],
    field: str,
) -> None:
    response = client.post("/v1/jobs", json={"kind": kind, "input": input})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_FAILED"
    assert field in {detail["field"] for detail in error["details"]}, error
    assert error["message"].startswith(f"Invalid {kind} input: input.")
    assert submitted == []


@pytest.mark.parametrize(("kind", "input"), [
    ("compare", COMPARE | {"system_prompt": "Be terse.", "max_tokens": 8}),
    ("prune", {"conversation_id": CONVERSATION, "keep_last": 2}),
    ("noop", {"anything": ["goes"]}),
])
def test_a_valid_input_is_submitted_as_sent(
    client: TestClient, submitted: list[dict[str, Any]], kind: str, input: dict[str, Any],
) -> None:
    response = client.post("/v1/jobs", json={"kind": kind, "input": input})
    assert response.status_code == 202, response.text
    assert [(call["kind"], call["input"]) for call in submitted] == [(kind, input)]
