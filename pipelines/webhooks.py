"""Job webhooks: POST the finished job to its `webhook_url`, signed so receivers can trust it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import orjson

from pipelines.errors import UpstreamUnavailable

SIGNATURE_HEADER = "X-Switchyard-Signature"


def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC of the body>`, the form GitHub and Stripe receivers already check."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(url: str, job: dict[str, Any], secret: str, *, timeout_s: float = 10.0,
            client: httpx.Client | None = None) -> int:
    """POST `job`; a 2xx is done, a 4xx is final (the receiver refused), anything else retries."""
    body = orjson.dumps(job)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
               "User-Agent": "Switchyard-Webhook/1"}
    try:
        if client is not None:
            response = client.post(url, content=body, headers=headers, timeout=timeout_s)
        else:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"webhook delivery failed: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise UpstreamUnavailable(f"webhook receiver answered {response.status_code}")
    return response.status_code
