"""Job webhooks: POST the finished job to its `webhook_url`, signed so receivers can trust it.

The URL was given by a user, so the request goes through pipelines/outbound.py: checked
after DNS resolution, sent to the checked address, no redirects, no userinfo.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import orjson

from pipelines import outbound
from pipelines.errors import HostNotResolved, UpstreamUnavailable

SIGNATURE_HEADER = "X-Switchyard-Signature"


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC of the body>`, the form GitHub and Stripe receivers already check."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(url: str, job: dict[str, Any], secret: str, *, policy: outbound.OutboundPolicy,
            timeout_s: float = 10.0, client: httpx.Client | None = None,
            resolve: outbound.Resolver | None = None) -> int:
    """POST `job`; a 2xx is done, a 4xx is final (the receiver refused), anything else retries.

    Raises UrlNotAllowed (final) when the URL reaches an address `policy` refuses.
    """
    try:
        target = outbound.check(url, policy, resolve)
    except HostNotResolved as exc:
        raise UpstreamUnavailable(f"webhook delivery failed: {exc.message}") from None
    body = orjson.dumps(job)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
               "User-Agent": "Switchyard-Webhook/1"}
    try:
        response = outbound.post(target, content=body, headers=headers, timeout_s=timeout_s,
                                 client=client)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"webhook delivery failed: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise UpstreamUnavailable(f"webhook receiver answered {response.status_code}")
    return response.status_code
