"""Health probes of a model server: a GET that must answer 2xx within a timeout."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    latency_ms: float | None
    reason: str | None = None
    body: Any = None


async def probe(client: httpx.AsyncClient, url: str, *, timeout_s: float,
                headers: dict[str, str] | None = None) -> Probe:
    """GET `url`; ok on a 2xx (with its JSON body when it has one)."""
    started = time.perf_counter()
    try:
        response = await client.get(url, timeout=timeout_s, headers=headers or {},
                                    follow_redirects=False)
    except httpx.TimeoutException:
        return Probe(False, None, f"health check timed out after {timeout_s:g}s ({url})")
    except httpx.TransportError as exc:
        return Probe(False, None, f"health check could not connect ({url}): "
                                  f"{type(exc).__name__}")
    latency_ms = (time.perf_counter() - started) * 1000
    if not 200 <= response.status_code < 300:
        return Probe(False, latency_ms, f"health check answered {response.status_code} ({url})")
    try:
        body = response.json()
    except ValueError:
        body = None
    return Probe(True, latency_ms, body=body)


def served_models(body: Any) -> list[str] | None:
    """Model ids of an OpenAI `/v1/models` answer; None if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    return [str(item.get("id")) for item in body["data"] if isinstance(item, dict)]
