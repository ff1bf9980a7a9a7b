"""Rate limits per caller and route group, shared by every API replica through Redis.

The strategy is the `limits` library's sliding window counter: two counters per caller
and group, updated by one Lua script, so memory stays constant per caller (a moving window
keeps one entry per request) and a caller cannot burst to twice the limit across a window
edge (a fixed window allows that). Each request costs two Redis round trips: the hit, then
the window's remaining count and reset time for the `X-RateLimit-*` headers.

If Redis fails the request goes through unlimited (and a warning is logged): the limiter
protects capacity, and refusing every request would be the larger outage.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import STRATEGIES, RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import Principal
from api.errors import error_response
from pipelines import budgets
from pipelines.errors import RateLimited, TokenBudgetExceeded
from pipelines.keys import Keys
from schemas.settings import Settings

log = logging.getLogger("switchyard.limits")

GROUPS = ("auth", "chat", "search", "upload", "general")
_CHAT_PREFIXES = ("/v1/chat/", "/v1/messages", "/v1/ws/chat", "/v1/compare", "/v1/completions",
                  "/v1/embeddings")


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
    if path.startswith("/v1/knowledge/") and path.endswith("/documents") and method == "POST":
        return "upload"
    return "general"


@dataclass(frozen=True, slots=True)
class Window:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`X-RateLimit-Reset` is seconds until the window frees up, like `Retry-After`."""
        return [(b"x-ratelimit-limit", str(self.limit).encode()),
                (b"x-ratelimit-remaining", str(self.remaining).encode()),
                (b"x-ratelimit-reset", str(math.ceil(self.reset_s)).encode())]

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
    """Limits per (caller, tier, group), plus login attempts per account and per address."""

    def __init__(self, redis: Redis, keys: Keys, *, strategy: str,
                 tiers: dict[str, dict[str, str]], login_per_account: str,
                 login_per_address: str, daily_token_budget: int,
                 anonymous_tier: str = "default") -> None:
        # Shares the app's connection pool, so limits add no connections of their own.
        storage = RedisStorage("async+redis://", implementation="redispy",
                               key_prefix=keys.rate_limit_prefix(), wrap_exceptions=True,
                               connection_pool=redis.connection_pool)  # type: ignore[arg-type]
        strategy_class: type[RateLimiter] = STRATEGIES[strategy]  # type: ignore[type-abstract]
        self.strategy = strategy_class(storage)
        self.items = {tier: {group: parse(limit) for group, limit in groups.items()}
                      for tier, groups in tiers.items()}
        if "default" not in self.items or set(GROUPS) - set(self.items["default"]):
            raise ValueError(f"rate_limit_tiers['default'] must set every group: {GROUPS}")
        self.login_per_account = parse(login_per_account)
        self.login_per_address = parse(login_per_address)
        self.redis = redis
        self.keys = keys
        self.daily_token_budget = daily_token_budget
        self.anonymous_tier = anonymous_tier

    def item(self, tier: str, group: str) -> RateLimitItem:
        return self.items.get(tier, {}).get(group) or self.items["default"][group]

    async def hit(self, who: str, tier: str, group: str) -> Window | None:
        """Spend one request of `who`'s allowance; None when Redis could not be asked."""
        item = self.item(tier, group)
        try:
            return await self._hit(item, group, who)
        except StorageError:
            log.warning("rate-limit storage unavailable; letting the request through")
            return None

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> Window:
        allowed = await self.strategy.hit(item, *identifiers)
        if isinstance(self.strategy, SlidingWindowCounterRateLimiter):
            # The library's reset for this strategy is 0 right after a window starts (it
            # takes the TTL modulo the window), so read the raw counters and do the sums.
            raw = await self.strategy.storage.get_sliding_window(  # type: ignore[attr-defined]
                item.key_for(*identifiers), item.get_expiry())
            return sliding_window(allowed, item.amount, item.get_expiry(), *raw)
        stats = await self.strategy.get_window_stats(item, *identifiers)
        return Window(allowed, item.amount, stats.remaining,
                      max(0.0, stats.reset_time - time.time()))

    async def check_login(self, email: str, address: str) -> None:
        """Raises RateLimited once an account or an address has tried too often."""
        for item, identity in ((self.login_per_account, f"account:{email}"),
                               (self.login_per_address, f"address:{address}")):
            try:
                window = await self._hit(item, "login", identity)
            except StorageError:
                log.warning("rate-limit storage unavailable; not limiting login")
                return
            if not window.allowed:
                raise RateLimited("Too many login attempts; try again later.",
                                  retry_after_s=window.retry_after_s)

    async def check_token_budget(self, who: str) -> None:
        """Raises TokenBudgetExceeded when the key has spent today's token budget."""
        if self.daily_token_budget <= 0:
            return
        if await budgets.tokens_spent(self.redis, self.keys, who) >= self.daily_token_budget:
            raise TokenBudgetExceeded(
                f"The daily token budget of {self.daily_token_budget} tokens is spent.",
                retry_after_s=budgets.seconds_to_midnight())


def client_address(scope: Scope) -> str:
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
        window = await limiter.hit(identity, tier, group)
        extra = window.headers() if window else []
        refusal: RateLimited | None = None
        if window is not None and not window.allowed:
            refusal = RateLimited("Rate limit exceeded; retry after the time in Retry-After.",
                                  retry_after_s=window.retry_after_s)
        elif group == "chat" and who is not None and method in ("POST", "GET"):
            try:
                await limiter.check_token_budget(who.limit_key)
            except RateLimited as exc:
                refusal = exc
        if refusal is not None:
            await _refuse(scope, receive, send, refusal, extra)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: RateLimited,
                  extra: list[tuple[bytes, bytes]]) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4429, "reason": exc.code})
        return
    retry_after = max(1, math.ceil(exc.retry_after_s))
    headers = {k.decode(): v.decode() for k, v in extra}
    headers["Retry-After"] = str(retry_after)
    response = error_response(scope.get("path", ""), 429, exc.code, exc.message,
                              request_id=scope.get("state", {}).get("request_id"),
                              headers=headers)
    await response(scope, receive, send)


def build_limiter(settings: Settings, redis: Redis, keys: Keys) -> Limiter | None:
    """The app's Limiter from settings, or None when rate limits are disabled."""
    if not settings.rate_limits_enabled:
        return None
    return Limiter(redis, keys, strategy=settings.rate_limit_strategy,
                   tiers=settings.rate_limit_tiers,
                   login_per_account=settings.login_limit_per_account,
                   login_per_address=settings.login_limit_per_address,
                   daily_token_budget=settings.daily_token_budget,
                   anonymous_tier=settings.anonymous_rate_limit_tier)
