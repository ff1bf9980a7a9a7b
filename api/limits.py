"""Rate limits per caller and route group, shared by every API replica through Redis.

The strategy is the `limits` library's sliding window counter: two counters per caller
and group, so memory stays constant per caller (a moving window keeps one entry per
request) and a caller cannot burst to twice the limit across a window edge (a fixed window
allows that). The library's acquire script answers only yes or no, and reading the window
for the `X-RateLimit-*` headers took a second round trip; `_ACQUIRE_AND_READ` is that
script (limits 5.8's `acquire_sliding_window.lua`, same keys and arithmetic) returning
the counters it read, so a request costs one round trip. Other strategies go through the
library (two round trips).

Jobs are what cost capacity, so every job a route creates is charged, whatever the route
(a WebSocket's `start` frames, `POST /v1/jobs` of any kind): `api/job_control.submit_job`
calls `spend_job_allowance`, which charges the job's group. The middleware charges each
request its route's group once; that charge pays for the request's first job of the same
group, so a chat request is not counted twice.

If Redis fails the request goes through unlimited (and a warning is logged): the limiter
protects capacity, and refusing every request would be the larger outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import STRATEGIES, RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import Principal
from api.errors import error_response
from api.leases import LEASE_LUA, LeaseKeeper, concurrency_refusal
from pipelines import budgets
from pipelines.errors import RateLimited, TokenBudgetExceeded
from pipelines.keys import Keys
from schemas.settings import Settings

log = logging.getLogger("switchyard.limits")

GROUPS = ("auth", "chat", "search", "upload", "general")
_CHAT_PREFIXES = ("/v1/chat/", "/v1/messages", "/v1/ws/chat", "/v1/compare", "/v1/completions",
                  "/v1/embeddings")
# The allowance a job of each kind spends; other kinds spend "general".
JOB_GROUPS = {"chat": "chat", "compare": "chat", "chain": "chat", "prune": "chat",
              "agent": "chat", "ingest": "upload"}

# limits 5.8's acquire_sliding_window.lua, plus: ARGV[4] = 1 only tests (nothing is
# spent), and the counters it read come back for the headers. Times are in milliseconds.
# With a third key (a concurrency lease set, api/leases.py) an allowed request also takes
# the lease ARGV[5] (limit ARGV[6], ttl ms ARGV[7]); when none is free nothing is spent.
_ACQUIRE_AND_READ = LEASE_LUA + """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local amount = tonumber(ARGV[3])
local dry_run = ARGV[4] == '1'

local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    -- The current window expired: shift it to the previous window.
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
end

local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[1])) or 0)
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
current_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[2])) or 0)

local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
local allowed = 0
local lease, lease_wait_ms = -1, 0
if amount <= limit and weighted + amount <= limit and KEYS[3] and not dry_run then
    lease, lease_wait_ms = take_lease(KEYS[3], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]))
end
if amount <= limit and weighted + amount <= limit and lease ~= 0 then
    allowed = 1
    if not dry_run then
        if current_ttl > 0 then
            redis.call('incrby', KEYS[2], amount)
        else
            redis.call('set', KEYS[2], amount, 'PX', expiry * 2)
            current_ttl = expiry * 2
        end
        current_count = current_count + amount
    end
end
return {allowed, previous_count, previous_ttl, current_count, current_ttl, lease,
        lease_wait_ms}
"""


def route_group(method: str, path: str) -> str:
    """Which allowance a request spends."""
    if path.startswith(("/v1/auth/", "/v1/keys")):
        return "auth"
    if path.startswith(_CHAT_PREFIXES) or (
        path.startswith("/v1/conversations/") and path.endswith("/messages")
        and method == "POST"
    ):
        return "chat"
    if path in ("/v1/knowledge/search", "/v1/knowledge/ask"):
        return "search"
    if method == "POST" and (path == "/v1/uploads" or path.startswith("/v1/knowledge/") and (
            path.endswith(("/documents", "/documents/confirm")))):
        return "upload"
    return "general"


@dataclass(frozen=True, slots=True)
class Window:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float

    @property
    def used(self) -> int:
        return self.limit - self.remaining

    def headers(self, now: float | None = None) -> list[tuple[bytes, bytes]]:
        """The seeds' four headers (STING, Stack 2.9): `X-RateLimit-Reset` is the epoch
        second at which the window frees up; `Retry-After` carries the same as a delay."""
        reset_at = math.ceil((time.time() if now is None else now) + self.reset_s)
        return [(b"x-ratelimit-limit", str(self.limit).encode()),
                (b"x-ratelimit-remaining", str(self.remaining).encode()),
                (b"x-ratelimit-reset", str(reset_at).encode()),
                (b"x-ratelimit-used", str(self.used).encode())]

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.reset_s))


def sliding_window(allowed: bool, limit: int, window_s: float, previous: int,
                   previous_ttl_s: float, current: int, current_ttl_s: float) -> Window:
    """Remaining and reset for `limits`' sliding window counter, from its raw counters.

    The count is `previous * previous_ttl / window + current`; the current counter lives for
    two windows, so it rolls over to "previous" when its TTL drops below one window.
    `reset_s` is when the next request would be allowed if refused, else the rollover.
    """
    weighted = previous * previous_ttl_s / window_s + current
    remaining = max(0, limit - math.floor(weighted))
    rollover_s = current_ttl_s - window_s if current_ttl_s > window_s else window_s
    if allowed and remaining > 0:
        return Window(True, limit, remaining, rollover_s)
    # The script allows a request when floor(previous weight) + current + 1 <= limit.
    if current + 1 <= limit and previous:
        # Wait for the previous window's weight to decay enough for one more request.
        wait_s = previous_ttl_s - (limit - current) * window_s / previous
    else:
        # After rollover `current` becomes `previous` and decays over one window.
        wait_s = rollover_s + window_s * (1 - limit / max(current, 1))
    return Window(allowed, limit, remaining, max(0.0, wait_s))


class Limiter:
    """Limits per (caller, tier, group); login attempts per address and failed logins per
    account and address; failed authentication per address."""

    def __init__(self, redis: Redis, keys: Keys, *, strategy: str,
                 tiers: dict[str, dict[str, str]], login_failures_per_account: str,
                 login_per_address: str, auth_failures_per_address: str,
                 daily_token_budget: int, leases: LeaseKeeper | None = None,
                 tier_token_budgets: dict[str, int] | None = None,
                 anonymous_tier: str = "default") -> None:
        # Shares the app's connection pool, so limits add no connections of their own.
        self.storage = RedisStorage("async+redis://", implementation="redispy",
                                    key_prefix=keys.rate_limit_prefix(), wrap_exceptions=True,
                                    connection_pool=redis.connection_pool)  # type: ignore[arg-type]
        strategy_class: type[RateLimiter] = STRATEGIES[strategy]  # type: ignore[type-abstract]
        self.strategy = strategy_class(self.storage)
        self._sliding = isinstance(self.strategy, SlidingWindowCounterRateLimiter)
        self._acquire = redis.register_script(_ACQUIRE_AND_READ)
        self.items = {tier: {group: parse(limit) for group, limit in groups.items()}
                      for tier, groups in tiers.items()}
        if "default" not in self.items or set(GROUPS) - set(self.items["default"]):
            raise ValueError(f"rate_limit_tiers['default'] must set every group: {GROUPS}")
        self.login_failures_per_account = parse(login_failures_per_account)
        self.login_per_address = parse(login_per_address)
        self.auth_failures_per_address = parse(auth_failures_per_address)
        self.redis = redis
        self.keys = keys
        self.prefix = keys.rate_limit_prefix()
        self.daily_token_budget = daily_token_budget
        self.tier_token_budgets = tier_token_budgets or {}
        self.anonymous_tier = anonymous_tier
        self.leases = leases

    def item(self, tier: str, group: str) -> RateLimitItem:
        return self.items.get(tier, {}).get(group) or self.items["default"][group]

    async def hit(self, who: str, tier: str, group: str) -> Window | None:
        """Spend one request of `who`'s allowance; None when Redis could not be asked."""
        return await self._guarded(self.item(tier, group), group, who)

    async def hit_and_lease(self, who: str, tier: str, group: str,
                            member: str) -> tuple[Window | None, RateLimited | None]:
        """`hit`, and take a concurrency lease for `member` in the same round trip. The
        refusal is ConcurrencyLimited (nothing spent) when the key runs all its tier
        allows."""
        assert self.leases is not None
        lease_limit = self.leases.limit_for(tier)
        if lease_limit <= 0 or not self._sliding:
            window = await self.hit(who, tier, group)
            if lease_limit > 0 and window is not None and window.allowed:
                try:
                    await self.leases.acquire(who, tier, member)
                except RateLimited as exc:
                    return window, exc
            return window, None
        item = self.item(tier, group)
        current = f"{self.prefix}:{{{item.key_for(group, who)}}}"
        try:
            (allowed, previous, previous_ttl_ms, count, ttl_ms, lease,
             wait_ms) = await self._acquire(
                keys=[f"{current}/-1", current, self.leases.set_key(who)],
                args=[item.amount, item.get_expiry(), 1, 0, member, lease_limit,
                      self.leases.ttl_ms])
        except RedisError:
            log.warning("rate-limit storage unavailable; letting the request through")
            return None, None
        window = sliding_window(bool(allowed) or int(lease) == 0, item.amount,
                                item.get_expiry(), int(previous), int(previous_ttl_ms) / 1000,
                                int(count), int(ttl_ms) / 1000)
        if int(lease) == 0:
            return window, concurrency_refusal(lease_limit, float(wait_ms))
        if int(lease) == 1:
            self.leases.hold(who, member, member)
        return window, None

    async def _guarded(self, item: RateLimitItem, *identifiers: str,
                       dry_run: bool = False) -> Window | None:
        try:
            return await self._window(item, *identifiers, dry_run=dry_run)
        except (StorageError, RedisError):
            log.warning("rate-limit storage unavailable; letting the request through")
            return None

    async def _window(self, item: RateLimitItem, *identifiers: str,
                      dry_run: bool = False) -> Window:
        """Spend (or with `dry_run` only test) one unit of `item` for `identifiers`."""
        if self._sliding:
            # The same keys as the library's storage: "{key}" and "{key}/-1".
            current = f"{self.prefix}:{{{item.key_for(*identifiers)}}}"
            allowed, previous, previous_ttl_ms, count, ttl_ms, _, _ = await self._acquire(
                keys=[f"{current}/-1", current],
                args=[item.amount, item.get_expiry(), 1, int(dry_run)])
            return sliding_window(bool(allowed), item.amount, item.get_expiry(), int(previous),
                                  int(previous_ttl_ms) / 1000, int(count), int(ttl_ms) / 1000)
        if dry_run:
            allowed = await self.strategy.test(item, *identifiers)
        else:
            allowed = await self.strategy.hit(item, *identifiers)
        stats = await self.strategy.get_window_stats(item, *identifiers)
        return Window(allowed, item.amount, stats.remaining,
                      max(0.0, stats.reset_time - time.time()))

    async def check_login(self, email: str, address: str) -> None:
        """Before checking a password: counts the attempt against the address, and refuses
        an address that has failed too often for this account. Other addresses (the
        account's owner) are not slowed down, so nobody can lock a user out."""
        _refuse_if_spent(await self._guarded(self.login_per_address, "login", address),
                               "Too many login attempts from this address; try again later.")
        _refuse_if_spent(
            await self._guarded(self.login_failures_per_account, "login-failed", email,
                                address, dry_run=True),
            "Too many failed logins for this account from this address; try again later.")

    async def login_failed(self, email: str, address: str) -> None:
        await self._guarded(self.login_failures_per_account, "login-failed", email, address)

    async def check_auth_failures(self, address: str) -> Window | None:
        """Before looking a credential up: refuses an address with too many failed ones."""
        window = await self._guarded(self.auth_failures_per_address, "auth-failed", address,
                                     dry_run=True)
        _refuse_if_spent(window, "Too many invalid credentials from this address; try "
                                 "again later.")
        return window

    async def auth_failed(self, address: str) -> Window | None:
        return await self._guarded(self.auth_failures_per_address, "auth-failed", address)

    def token_budget(self, tier: str) -> int:
        """Tokens per UTC day for a key of `tier` (0: no budget): the tier's own, else
        DAILY_TOKEN_BUDGET."""
        return self.tier_token_budgets.get(tier, self.daily_token_budget)

    async def check_token_budget(self, who: str, tier: str = "default") -> None:
        """Raises TokenBudgetExceeded when the key has spent today's token budget."""
        budget = self.token_budget(tier)
        if budget <= 0:
            return
        if await budgets.tokens_spent(self.redis, self.keys, who) >= budget:
            raise TokenBudgetExceeded(
                f"The daily token budget of {budget} tokens is spent.",
                retry_after_s=budgets.seconds_to_midnight())


class WindowSpent(RateLimited):
    """A refusal by a counted window: the 429 carries that window's headers."""

    def __init__(self, message: str, window: Window) -> None:
        super().__init__(message, retry_after_s=window.retry_after_s)
        self.window = window


def _refuse_if_spent(window: Window | None, message: str) -> None:
    if window is not None and not window.allowed:
        allowance = _allowance.get()
        if allowance is not None:
            # The response's X-RateLimit-* headers describe the window that refused.
            allowance.window = window
        raise WindowSpent(message, window)


@dataclass(slots=True)
class Allowance:
    """The current request's caller and what it has spent, for `spend_job_allowance`."""

    limiter: Limiter
    identity: str
    tier: str
    # The group the middleware charged: it pays for the request's first job of that group.
    prepaid: str | None
    # The latest window, for the response's X-RateLimit-* headers.
    window: Window | None
    # A concurrency lease the middleware took with the request's allowance, not yet bound
    # to a job; and the leases bound to this request's jobs (settled when it ends).
    lease: str | None = None
    bound: list[str] = field(default_factory=list)

    async def settle(self) -> None:
        """After the request: give back an unused lease; release those whose job ended."""
        leases = self.limiter.leases
        if leases is None:
            return
        if self.lease is not None:
            await leases.release(self.identity, self.lease)
            self.lease = None
        for member in self.bound:
            await leases.settle(member)


# Set by RateLimitMiddleware for the whole request (or WebSocket), read by submit_job: every
# route that creates a job is charged without having to pass its caller along.
_allowance: ContextVar[Allowance | None] = ContextVar("switchyard_allowance", default=None)


async def spend_job_allowance(kind: str, job_id: str | None = None) -> None:
    """Charge the current caller one job of `kind`; RateLimited when the allowance is spent,
    ConcurrencyLimited when the key already runs all the jobs its tier allows.

    With `job_id` the job holds a concurrency lease until it ends (api/leases.py): the one
    the middleware took with the request, else a new one. Outside a rate-limited request
    (limits disabled, or no caller) this does nothing.
    """
    allowance = _allowance.get()
    if allowance is None:
        return
    limiter = allowance.limiter
    group = JOB_GROUPS.get(kind, "general")
    if allowance.prepaid == group:
        allowance.prepaid = None
    else:
        window = await limiter.hit(allowance.identity, allowance.tier, group)
        if window is not None:
            allowance.window = window
            _refuse_if_spent(window, "Rate limit exceeded; retry after the time in "
                                     "Retry-After.")
        if group == "chat":
            await limiter.check_token_budget(allowance.identity, allowance.tier)
    if job_id is None or limiter.leases is None:
        return
    if allowance.lease is not None:
        limiter.leases.hold(allowance.identity, allowance.lease, job_id)
        allowance.bound.append(allowance.lease)
        allowance.lease = None
        return
    # A WebSocket starts job after job: let the ended ones go before counting.
    await asyncio.gather(*(limiter.leases.settle(m) for m in allowance.bound))
    await limiter.leases.acquire(allowance.identity, allowance.tier, job_id)
    allowance.bound.append(job_id)


async def release_job_lease(job_id: str) -> None:
    """Give back the lease taken for `job_id` when no such job came to run (a failed
    insert, an idempotent repeat)."""
    allowance = _allowance.get()
    if allowance is None or allowance.limiter.leases is None or job_id not in allowance.bound:
        return
    allowance.bound.remove(job_id)
    await allowance.limiter.leases.release(allowance.identity, job_id)


# Where authentication leaves the window it counted (invalid credentials per address), so
# a 401 answered before RateLimitMiddleware runs still carries X-RateLimit-* headers.
AUTH_WINDOW_STATE = "auth_rate_window"


def remember_auth_window(scope: Scope, window: Window | None) -> None:
    if window is not None:
        scope.setdefault("state", {})[AUTH_WINDOW_STATE] = window


async def refusal_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """X-RateLimit-* for an answer AuthMiddleware gives itself (401, 403): the window
    authentication counted, else one request of the address's anonymous allowance for
    the route's group (a round trip only on this refusal path)."""
    window: Window | None = scope.get("state", {}).get(AUTH_WINDOW_STATE)
    limiter: Limiter | None = scope["app"].state.services.limiter
    if window is None and limiter is not None:
        window = await limiter.hit(f"addr:{client_address(scope)}", limiter.anonymous_tier,
                                   route_group(scope.get("method", "GET"),
                                               scope.get("path", "")))
    return window.headers() if window is not None else []


def client_address(scope: Scope) -> str:
    """The client's address: the TCP peer, or what a trusted proxy said (api/app.py)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Runs inside AuthMiddleware: callers are known, public `/v1` routes count per address.

    The limiter comes from the app's services (built in the lifespan); None disables it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        limiter: Limiter | None = (scope["app"].state.services.limiter
                                   if scope["type"] in ("http", "websocket")
                                   and path.startswith("/v1") else None)
        if limiter is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        who: Principal | None = scope.get("state", {}).get("principal")
        group = route_group(method, path)
        identity, tier = ((who.limit_key, who.tier) if who
                          else (f"addr:{client_address(scope)}", limiter.anonymous_tier))
        # A chat request starts a job: its concurrency lease comes in the same round trip.
        lease = (uuid.uuid4().hex if group == "chat" and method == "POST" and who is not None
                 and limiter.leases is not None else None)
        refusal: RateLimited | None = None
        if lease is not None:
            window, refusal = await limiter.hit_and_lease(identity, tier, group, lease)
        else:
            window = await limiter.hit(identity, tier, group)
        if refusal is not None:
            lease = None
        elif window is not None and not window.allowed:
            refusal = WindowSpent("Rate limit exceeded; retry after the time in Retry-After.",
                                  window)
        elif group == "chat" and who is not None and method in ("POST", "GET"):
            try:
                await limiter.check_token_budget(who.limit_key, tier)
            except RateLimited as exc:
                refusal = exc
        if refusal is not None:
            if lease is not None and limiter.leases is not None:
                await limiter.leases.release(identity, lease)
            await refuse(scope, receive, send, refusal, window.headers() if window else [])
            return
        allowance = Allowance(limiter, identity, tier, prepaid=group, window=window,
                              lease=lease)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and allowance.window is not None:
                message["headers"] = [*message.get("headers", []),
                                      *allowance.window.headers()]
            await send(message)

        token = _allowance.set(allowance)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _allowance.reset(token)
            if allowance.lease is not None or allowance.bound:
                await allowance.settle()


async def refuse(scope: Scope, receive: Receive, send: Send, exc: RateLimited,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer 429 in the route's error format with Retry-After (a WebSocket: close 4429)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4429, "reason": exc.code})
        return
    retry_after = max(1, math.ceil(exc.retry_after_s))
    if extra is None and isinstance(exc, WindowSpent):
        extra = exc.window.headers()
    headers = {k.decode(): v.decode() for k, v in extra or []}
    headers["Retry-After"] = str(retry_after)
    response = error_response(scope.get("path", ""), 429, exc.code, exc.message,
                              request_id=scope.get("state", {}).get("request_id"),
                              headers=headers)
    await response(scope, receive, send)


def build_limiter(settings: Settings, redis: Redis, keys: Keys) -> Limiter | None:
    """The app's Limiter from settings, or None when rate limits are disabled."""
    if not settings.rate_limits_enabled:
        return None
    leases = LeaseKeeper(redis, keys, limits=settings.concurrency_limits,
                         ttl_s=settings.concurrency_lease_ttl_s,
                         max_hold_s=settings.max_sse_lifetime_s)
    return Limiter(redis, keys, strategy=settings.rate_limit_strategy,
                   tiers=settings.rate_limit_tiers,
                   login_failures_per_account=settings.login_limit_per_account,
                   login_per_address=settings.login_limit_per_address,
                   auth_failures_per_address=settings.auth_failure_limit_per_address,
                   daily_token_budget=settings.daily_token_budget, leases=leases,
                   tier_token_budgets=settings.tier_daily_token_budgets,
                   anonymous_tier=settings.anonymous_rate_limit_tier)
