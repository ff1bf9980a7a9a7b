"""CORS for browser clients, with Starlette's CORSMiddleware; off unless origins are set.

Preflights (`OPTIONS` with `Access-Control-Request-Method`) carry no credentials, so the
middleware sits outside authentication and answers them itself. Credentialed requests
(cookies, HTTP auth) are allowed only for listed origins: a wildcard origin with
credentials would let every site act as the signed-in user, so Settings refuses that
pair at start-up. Responses expose the headers clients read (request id, rate limits).
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from schemas.settings import Settings

# What the OpenAI and Anthropic browser SDKs and our own clients send beyond the safelist.
ALLOWED_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "Idempotency-Key",
                   "X-Request-ID", "Last-Event-ID", "anthropic-version", "anthropic-beta",
                   "anthropic-dangerous-direct-browser-access")
EXPOSED_HEADERS = ("X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                   "X-RateLimit-Reset", "X-RateLimit-Used", "Retry-After")
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def cors_middleware(settings: Settings) -> list[Middleware]:
    """The CORS layer, or none when CORS_ALLOWED_ORIGINS is empty (the default)."""
    if not settings.cors_allowed_origins:
        return []
    return [Middleware(CORSMiddleware, allow_origins=settings.cors_allowed_origins,
                       allow_methods=ALLOWED_METHODS,
                       allow_headers=[*ALLOWED_HEADERS, *settings.cors_extra_headers],
                       allow_credentials=settings.cors_allow_credentials,
                       expose_headers=EXPOSED_HEADERS, max_age=settings.cors_max_age_s)]
