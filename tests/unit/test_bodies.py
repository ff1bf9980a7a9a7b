"""api/bodies.py and schemas/fields.py: JSON the service can store and send back, ids in
every UUID spelling, instants that fit, and which failures mean a dependency is down."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
import redis.exceptions
from sqlalchemy import exc as sa_errors

from api.bodies import MAX_JSON_DEPTH, JsonOutOfBounds, loads_bounded
from api.errors import dependency_unavailable
from schemas.accounts import KeyCreate
from schemas.fields import canonical_uuid
from schemas.knowledge import SearchRequest
from schemas.openai import ChatCompletionRequest

UUID = "00000000-0000-0000-0000-00000000abcd"


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


def test_json_nested_to_the_limit_is_read_and_one_level_more_is_refused() -> None:
    assert loads_bounded(_nested(MAX_JSON_DEPTH))
    with pytest.raises(JsonOutOfBounds, match="nested"):
        loads_bounded(_nested(MAX_JSON_DEPTH + 1))


def test_a_refused_document_is_a_json_decode_error_for_callers_that_catch_only_those() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads_bounded(b"[" * 300 + b"]" * 300)


@pytest.mark.parametrize("number", [2**64, 2**200, -(2**63) - 4096])
def test_integers_outside_the_64_bit_range_are_refused(number: int) -> None:
    with pytest.raises(JsonOutOfBounds, match="64-bit"):
        loads_bounded(json.dumps({"input": {"n": [number]}}))


@pytest.mark.parametrize("raw", ["1e300", "-1.5e19", "18446744073709551616.0"])
def test_floats_beyond_the_range_are_refused_because_jsonb_returns_them_as_integers(
    raw: str,
) -> None:
    with pytest.raises(JsonOutOfBounds):
        loads_bounded(f'{{"x": {raw}}}')


@pytest.mark.parametrize("raw", [str(2**64 - 1), str(-(2**63)), "1e19", "0.5", "-1e-300"])
def test_numbers_within_the_range_are_read(raw: str) -> None:
    value = loads_bounded(f"[{raw}]")
    assert orjson.dumps(value)


@pytest.mark.parametrize("raw", ['["a\\u0000"]', '{"k\\u0000": 1}', '"\\u0000"'])
def test_nul_in_any_string_or_key_is_refused(raw: str) -> None:
    with pytest.raises(JsonOutOfBounds, match="U\\+0000"):
        loads_bounded(raw)


def test_malformed_json_still_raises_orjsons_own_error() -> None:
    with pytest.raises(orjson.JSONDecodeError) as info:
        loads_bounded(b"{nope")
    assert not isinstance(info.value, JsonOutOfBounds)


@pytest.mark.parametrize("spelling", [
    "{" + UUID + "}", "urn:uuid:" + UUID, UUID.replace("-", ""), UUID.upper(),
])
def test_every_uuid_spelling_becomes_the_canonical_one(spelling: str) -> None:
    assert canonical_uuid(spelling) == UUID


@pytest.mark.parametrize("value", ["nope", "", "\x00", UUID + "0"])
def test_anything_else_is_no_uuid(value: str) -> None:
    assert canonical_uuid(value) is None


def test_body_ids_are_canonical_and_other_strings_stay_as_given() -> None:
    search = SearchRequest.model_validate({"query": "q", "knowledge_ids": [
        "{" + UUID + "}", "nope"], "filters": {"document_ids": ["urn:uuid:" + UUID]}})
    assert search.knowledge_ids == [UUID, "nope"]
    assert search.filters is not None and search.filters.document_ids == [UUID]
    chat = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "conversation_id": "urn:uuid:" + UUID.upper()})
    assert chat.conversation_id == UUID


def test_an_expiry_whose_utc_instant_is_past_year_9999_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="outside the supported range"):
        KeyCreate.model_validate({"name": "k", "expires_at": "9999-12-31T23:59:59-23:59"})
    key = KeyCreate.model_validate({"name": "k", "expires_at": "2030-01-01T02:00:00+02:00"})
    assert key.expires_at is not None and key.expires_at.isoformat() == "2030-01-01T00:00:00+00:00"


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("exc", "unavailable"), [
    (redis.exceptions.ConnectionError("Connection refused"), True),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
    (ConnectionRefusedError(111, "Connection refused"), True),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed"), True),
    (sa_errors.TimeoutError("QueuePool limit reached"), True),
    (sa_errors.OperationalError("connect", {}, _Orig("57P03")), True),  # starting up
    (sa_errors.InterfaceError("select", {}, _Orig("08006"), connection_invalidated=True), True),
    (ExceptionGroup("relay", [redis.exceptions.ConnectionError("gone")]), True),
    (sa_errors.DataError("select", {}, _Orig("22P02")), False),  # invalid input: a bug
    (PermissionError(13, "Permission denied"), False),
    (FileNotFoundError(2, "No such file"), False),
    (ValueError("boom"), False),
    (ExceptionGroup("relay", [redis.exceptions.ConnectionError("gone"), KeyError("x")]), False),
])
def test_only_failures_to_reach_redis_or_postgres_count_as_unavailable(
    exc: Any, unavailable: bool,
) -> None:
    assert dependency_unavailable(exc) is unavailable
