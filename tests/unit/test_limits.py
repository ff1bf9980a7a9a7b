"""api/limits.py arithmetic: route groups, and headers from the sliding window counters."""

from __future__ import annotations

import asyncio

import pytest

from api.limits import (
    Allowance,
    Window,
    _allowance,
    route_group,
    sliding_window,
    spend_job_allowance,
)
from pipelines.errors import RateLimited


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
    headers = dict(window.headers(now=1_700_000_000.5))
    # Reset is an epoch second (the seeds' form), Used what the window has spent.
    assert headers[b"x-ratelimit-reset"] == b"1700000061"
    assert headers[b"x-ratelimit-used"] == b"1"
    assert headers[b"x-ratelimit-remaining"] == b"9"


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


class _CountingLimiter:
    """Stands in for Limiter: remembers each group charged; refuses past `allowed` hits."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.charged: list[str] = []

    async def hit(self, who: str, tier: str, group: str) -> Window:
        self.charged.append(group)
        ok = len(self.charged) <= self.allowed
        return Window(ok, self.allowed, max(0, self.allowed - len(self.charged)), 30.0)

    leases = None  # no concurrency limits here (tests/integration/test_concurrency.py)

    async def check_token_budget(self, who: str, tier: str = "default") -> None:
        return None


def _spend(limiter: _CountingLimiter, prepaid: str | None, kinds: list[str]) -> list[str]:
    """Spend one job of each kind inside a request whose route charged `prepaid`."""
    outcomes: list[str] = []

    async def run() -> None:
        allowance = Allowance(limiter, "key:k", "default", prepaid=prepaid,  # type: ignore[arg-type]
                              window=None)
        token = _allowance.set(allowance)
        try:
            for kind in kinds:
                try:
                    await spend_job_allowance(kind)
                    outcomes.append("ok")
                except RateLimited:
                    outcomes.append("429")
        finally:
            _allowance.reset(token)

    asyncio.run(run())
    return outcomes


def test_the_routes_own_charge_pays_for_its_first_job_of_that_group_only() -> None:
    limiter = _CountingLimiter(allowed=10)
    assert _spend(limiter, "chat", ["chat", "chat", "compare"]) == ["ok"] * 3
    assert limiter.charged == ["chat", "chat"]


def test_a_job_of_another_group_is_charged_to_that_group() -> None:
    limiter = _CountingLimiter(allowed=10)
    _spend(limiter, "general", ["chat", "ingest", "noop", "noop"])
    assert limiter.charged == ["chat", "upload", "general"]


def test_jobs_past_the_allowance_are_refused() -> None:
    assert _spend(_CountingLimiter(allowed=2), "chat", ["chat"] * 5) == [
        "ok", "ok", "ok", "429", "429"]

