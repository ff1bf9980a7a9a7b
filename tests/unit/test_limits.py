"""api/limits.py arithmetic: route groups, and headers from the sliding window counters."""

from __future__ import annotations

import pytest

from api.limits import route_group, sliding_window


@pytest.mark.parametrize(("method", "path", "group"), [
    ("POST", "/v1/auth/login", "auth"),
    ("GET", "/v1/keys/validate", "auth"),
    ("POST", "/v1/chat/completions", "chat"),
    ("POST", "/v1/messages", "chat"),
    ("POST", "/v1/conversations/abc/messages", "chat"),
    ("GET", "/v1/conversations/abc/messages", "general"),
    ("POST", "/v1/knowledge/search", "search"),
    ("POST", "/v1/knowledge/kb1/documents", "upload"),
    ("GET", "/v1/knowledge/kb1/documents", "general"),
    ("GET", "/v1/jobs", "general"),
])
def test_each_route_spends_its_groups_allowance(method: str, path: str, group: str) -> None:
    assert route_group(method, path) == group


def test_a_fresh_window_reports_the_time_to_rollover_not_zero() -> None:
    window = sliding_window(True, 10, 60, previous=0, previous_ttl_s=0, current=1,
                            current_ttl_s=120)
    assert (window.allowed, window.remaining) == (True, 9)
    assert window.reset_s == pytest.approx(60)
    assert dict(window.headers())[b"x-ratelimit-reset"] == b"60"


def test_the_previous_window_counts_by_its_remaining_weight() -> None:
    window = sliding_window(True, 10, 60, previous=10, previous_ttl_s=30, current=2,
                            current_ttl_s=90)
    assert window.remaining == 3  # 10 - floor(10 * 30/60 + 2)


def test_a_refusal_waits_for_the_previous_window_to_decay() -> None:
    # floor(10 * ttl/60) + 5 + 1 <= 10 once ttl < 30: 15 s from a ttl of 45.
    window = sliding_window(False, 10, 60, previous=10, previous_ttl_s=45, current=5,
                            current_ttl_s=105)
    assert not window.allowed and window.remaining == 0
    assert window.reset_s == pytest.approx(15)
    assert window.retry_after_s == 15


def test_a_full_current_window_waits_for_its_rollover() -> None:
    window = sliding_window(False, 10, 60, previous=0, previous_ttl_s=0, current=10,
                            current_ttl_s=100)
    assert window.reset_s == pytest.approx(40)
