"""The error mapping and retry policy shared by the SDK-backed providers.

The `openai` and `anthropic` SDKs raise the same shapes of exception (`APIStatusError`
with a response, `APITimeoutError`, `APIConnectionError`, `APIError`), so one function
maps either into the project's error tree. The SDKs' own retries are turned off: they
would retry a 429 we must surface, and they cannot know when output has reached the
caller, after which a retry would splice two answers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any

from pipelines.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from pipelines.ports import ChatChunk

MAX_BACKOFF_S = 8.0
# Statuses whose bodies are about the caller's request, so the caller can act on them.
_CALLER_STATUSES = {400, 413, 422}
# Statuses worth another attempt, as the SDKs themselves treat them.
_TRANSIENT_STATUSES = {408, 409}
_HTTP_LIBRARIES = {"httpx", "httpx2", "httpcore", "httpcore2"}


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return max(float(value) / 1000, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` masked, so keys never reach logs or users."""
    return text.replace(secret, "***") if secret else text


def classify_status(status: int, headers: Any, detail: str, *, provider: str,
                    api_key: str | None) -> tuple[Exception, bool]:
    """(the project error for an upstream HTTP error status, whether another attempt may help).

    Shared by the SDK-backed providers and the OpenAI provider's own HTTP path.
    """
    detail = scrub(detail, api_key)
    if status in (401, 403):
        # The upstream message may echo (part of) our key: say nothing of it, and hide the
        # original exception from tracebacks too.
        hidden = UpstreamError(
            f"{provider} upstream rejected the configured credentials ({status})",
            status=502,
        )
        hidden.__suppress_context__ = True
        return hidden, False
    if status == 429:
        return UpstreamRateLimited(
            f"{provider} upstream rate limit exceeded",
            status=429,
            retry_after_s=parse_retry_after(headers),
        ), False
    if status >= 500 or status < 400 or status in _TRANSIENT_STATUSES:
        # < 400: an error event inside a 200 stream (e.g. Anthropic's overloaded_error).
        return UpstreamUnavailable(f"{provider} upstream failed ({status}): {detail}"), True
    if status in _CALLER_STATUSES:
        return UpstreamError(f"{provider} upstream rejected the request: {detail}",
                             status=400), False
    return UpstreamError(f"{provider} upstream error ({status}): {detail}", status=502), False


def classify(
    exc: BaseException, sdk: ModuleType, *, provider: str, api_key: str | None
) -> tuple[Exception, bool] | None:
    """(the project error for an SDK exception, whether another attempt may help).

    None means `exc` is not an SDK error and should propagate unchanged.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return UpstreamTimeout(f"{provider} upstream timed out", status=504), True
    if isinstance(exc, sdk.APIConnectionError):
        return UpstreamUnavailable(f"{provider} upstream unreachable"), True
    if isinstance(exc, sdk.APIStatusError):
        headers = exc.response.headers if exc.response is not None else None
        return classify_status(exc.status_code, headers,
                               str(getattr(exc, "message", "") or exc), provider=provider,
                               api_key=api_key)
    return classify_transport(exc, provider=provider, api_key=api_key, sdk=sdk)


def classify_transport(exc: BaseException, *, provider: str, api_key: str | None,
                       sdk: ModuleType | None = None) -> tuple[Exception, bool] | None:
    """The HTTP client's own errors (and an SDK's generic stream error) as project errors."""
    transport = _transport_failure(exc)
    if transport == "timeout":
        return UpstreamTimeout(f"{provider} upstream timed out", status=504), True
    if transport == "broken":
        return UpstreamUnavailable(f"{provider} upstream connection failed: {exc!r}"), True
    if sdk is not None and isinstance(exc, sdk.APIError):
        detail = scrub(str(exc), api_key)
        return UpstreamUnavailable(f"{provider} upstream stream error: {detail}"), True
    return None


def _transport_failure(exc: BaseException) -> str | None:
    """Sort the HTTP client's own errors into "timeout" or "broken" (None: not one).

    The SDKs wrap transport errors raised while sending, but not those raised while a
    stream is being read, which surface as the HTTP library's (httpx, or httpx2 in newer
    SDKs). Matched by name so either library, whichever the SDK pins, is recognised.
    """
    if type(exc).__module__.split(".")[0] not in _HTTP_LIBRARIES:
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "TimeoutException" in names:
        return "timeout"
    if names & {"TransportError", "StreamError"}:
        return "broken"
    return None


def backoff_s(attempt: int, base_s: float) -> float:
    """Full-jitter exponential backoff, so retrying workers do not stampede together."""
    return random.uniform(0, min(MAX_BACKOFF_S, base_s * 2**attempt))


async def stream_with_retries(
    attempt_stream: Callable[[], AsyncIterator[ChatChunk]],
    classify_error: Callable[[BaseException], tuple[Exception, bool] | None],
    *,
    max_retries: int,
    backoff_base_s: float,
    provider: str,
) -> AsyncIterator[ChatChunk]:
    """Run `attempt_stream` again on transient failures until its first chunk is out.

    After a chunk has reached the caller the failure is final (UpstreamError 502): a
    retry would repeat text the caller already has.
    """
    attempt = 0
    while True:
        started = False
        try:
            chunks = attempt_stream()
            try:
                async for chunk in chunks:
                    started = True
                    yield chunk
            finally:
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            return
        except Exception as exc:
            mapped = classify_error(exc)
            if mapped is None:
                raise
            error, transient = mapped
            if started:
                raise UpstreamError(
                    f"{provider} upstream stream broke after output began: {error}", status=502
                ) from exc
            if not transient:
                raise error from _cause(error, exc)
            if attempt >= max_retries:
                if isinstance(error, UpstreamTimeout):
                    raise error from _cause(error, exc)
                raise UpstreamUnavailable(
                    f"{error} (gave up after {attempt + 1} attempts)"
                ) from exc
            await asyncio.sleep(backoff_s(attempt, backoff_base_s))
            attempt += 1


def call_with_retries(
    call: Callable[[], Any],
    classify_error: Callable[[BaseException], tuple[Exception, bool] | None],
    *,
    max_retries: int,
    backoff_base_s: float,
) -> Any:
    """`call()` with the same policy as a stream that has not started yet."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            mapped = classify_error(exc)
            if mapped is None:
                raise
            error, transient = mapped
            if not transient or attempt >= max_retries:
                raise error from _cause(error, exc)
            time.sleep(backoff_s(attempt, backoff_base_s))
            attempt += 1


def _cause(error: Exception, exc: BaseException) -> BaseException | None:
    """`exc`, unless `classify` marked `error` as one whose cause must stay hidden."""
    return None if error.__suppress_context__ else exc
