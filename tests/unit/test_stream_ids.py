"""Which `Last-Event-ID` values are stream ids Redis accepts (anything else is a 400)."""

from __future__ import annotations

import pytest

from pipelines.events import is_valid_stream_id

MAX = str(2**64 - 1)


@pytest.mark.parametrize("value", ["0", "1-0", "1700000000000-3", f"{MAX}-{MAX}", MAX])
def test_redis_stream_ids_are_accepted(value: str) -> None:
    assert is_valid_stream_id(value)


@pytest.mark.parametrize("value", [
    "²", "1-²", "١٢٣", "１２-0",  # digits to str.isdigit, not to Redis
    "1" * 26, str(2**64), f"1-{2**64}", "9" * 40,  # beyond 64 bits
    "", "-", "1-", "-1", "1-2-3", " 1", "1 ", "+1", "0x10", "1.5",
])
def test_anything_else_is_refused(value: str) -> None:
    assert not is_valid_stream_id(value)
