"""Schema fuzzing: schemathesis generates requests from `/openapi.json` and sends them with
a valid key. No response may be a 5xx, and every response must match the documented
status codes, content types and schemas. Bounded (few examples per operation, stateless)
so it can run in CI.

A second run plants hostile values into the generated requests, the kind that used to be
accepted and then break the service (issue 14): JSON nested 300 deep, numbers beyond 64
bits, NUL in strings, query values and paths, and ids in other UUID spellings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.integration.accounts import RELAXED_LOGIN_ENV, User, new_user
from tests.integration.conftest import Stack, _start_stack

MAX_EXAMPLES = 8
HOSTILE_EXAMPLES = 6
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
               redis_url: str) -> Iterator[Stack]:
    # Short chats: a generated dev model request must not hold a worker for long.
    stack = _start_stack(tmp_path_factory.mktemp("fuzz"), database_url, redis_url,
                         env={**RELAXED_LOGIN_ENV, "CHAT_TIMEOUT_S": "10",
                              "MAX_SSE_LIFETIME_S": "5"})
    yield stack
    stack.stop()


@pytest.fixture(scope="module", params=["user", "admin"])
def fuzz_user(request: pytest.FixtureRequest, fuzz_stack: Stack) -> User:
    """A user (then an admin, to reach admin routes) on the generous `admin` rate-limit
    tier, so limits do not hide bugs."""
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=10) as http:
        return new_user(http, fuzz_stack.headers, role=request.param, tier="admin")


def test_no_server_errors_and_every_response_conforms(fuzz_stack: Stack,
                                                      fuzz_user: User) -> None:
    _fuzz_every_operation(fuzz_stack, fuzz_user, hostile=False)


def test_hostile_values_are_refused_without_server_errors(fuzz_stack: Stack) -> None:
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=10) as http:
        admin = new_user(http, fuzz_stack.headers, role="admin", tier="admin")
    _fuzz_every_operation(fuzz_stack, admin, hostile=True)


def _fuzz_every_operation(stack: Stack, user: User, *, hostile: bool) -> None:
    # Driven by hand rather than `schemathesis.pytest.from_fixture`: that loader reads
    # `request.node._nodeid`, which pytest 9 no longer has.
    # Model registry writes would change the models every other test of the run sees.
    api_schema = schemathesis.openapi.from_url(stack.base_url + "/openapi.json").exclude(
        path_regex="^/v1/admin/models", method=["POST", "PUT", "DELETE"]).exclude(
        # Creating a deployment registers a model and runs its generated command; load and
        # unload start and stop deployments (tests/integration/test_deployments.py).
        path_regex="^/v1/(deployments$|models/.+/(load|unload)$)", method=["POST"])
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operations += 1
        failure = _fuzz(result.ok(), stack, user, hostile=hostile)
        if failure is not None:
            failures.append(failure)
    assert operations > 10
    assert not failures, "\n\n".join(failures)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = {"a": value}
    return value


HOSTILE_VALUES = [_nested(300), 2**200, -(2**70), 1e300, "a\x00b", {"k\x00": 1}]
HOSTILE_IDS = ["{00000000-0000-0000-0000-000000000000}",
               "urn:uuid:00000000-0000-0000-0000-000000000000", "a\x00b", "\x00"]


def _plant(case: Any, data: st.DataObject) -> None:
    """Put one hostile value into the case: into a path parameter, a query parameter, or a
    JSON object anywhere in the body (an `Any`-typed field stores what it is given)."""
    targets = [name for name, present in (
        ("path", case.path_parameters), ("query", True),
        ("body", isinstance(case.body, dict | list))) if present]
    target = data.draw(st.sampled_from(targets))
    if target == "path":
        name = data.draw(st.sampled_from(sorted(case.path_parameters)))
        case.path_parameters = {**case.path_parameters,
                                name: data.draw(st.sampled_from(HOSTILE_IDS))}
    elif target == "query":
        names = [parameter.name for parameter in case.operation.query] or ["q"]
        case.query = {**(case.query or {}), data.draw(st.sampled_from(names)): "a\x00b"}
    else:
        objects = _objects(case.body)
        if not objects:
            case.body = {"hostile": data.draw(st.sampled_from(HOSTILE_VALUES))}
            return
        target_object = objects[data.draw(st.integers(0, len(objects) - 1))]
        target_object["hostile"] = data.draw(st.sampled_from(HOSTILE_VALUES))


def _objects(value: Any) -> list[dict[str, Any]]:
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _fuzz(operation: Any, stack: Stack, user: User, *, hostile: bool) -> str | None:
    """Run one operation's examples; the failure report, or None. Prints what it saw
    (visible with `pytest -s`), since a route answering only 4xx is barely exercised."""
    statuses: list[int] = []

    @given(case=operation.as_strategy(), data=st.data())
    @settings(max_examples=HOSTILE_EXAMPLES if hostile else MAX_EXAMPLES, deadline=None,
              derandomize=True, phases=[Phase.explicit, Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any, data: st.DataObject) -> None:
        if hostile:
            _plant(case, data)
        response = case.call_and_validate(base_url=stack.base_url, headers=user.headers,
                                          checks=CHECKS, timeout=20)
        statuses.append(response.status_code)

    try:
        run()
    # Report every operation's failure, not just the first; schemathesis raises its
    # FailureGroup, a BaseExceptionGroup, which `except Exception` does not catch.
    except (Exception, FailureGroup) as exc:
        return f"{operation.label}: {exc}"
    finally:
        print(f"{operation.label}: {len(statuses)} calls, statuses {sorted(set(statuses))}")
    return None
