"""Gateway overhead: the same streaming chat request straight to a fake upstream and through
Switchyard (a registry model pointed at that fake), side by side in one run.

The fake runs in its own process (`spawn_fake_upstream`) with a set time to first token
and inter-token gap, so it does not share the client's or the API's GIL. Reported per
concurrency (1, 50, 200 streams): TTFT p50/p99 of each path and what the gateway adds,
and aggregate tokens/s of each path and their ratio.

Standalone: `python -m tests.bench.gateway [--quick]` starts its own stack; `make bench`
calls `run(base_url, admin_key)` on the shared one. Both paths are measured with the same
client code in this process, so client-side costs cancel out of the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import httpx
import orjson

from tests.fakes.upstream import spawn_fake_upstream

TTFT_MS = 50.0
GAP_MS = 10.0
TOKENS = 64


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                      body: dict[str, Any]) -> tuple[float, int]:
    """(ms to the first content chunk, content chunks) of one streamed completion."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                if first is None:
                    first = (time.perf_counter() - started) * 1000
                tokens += 1
    if first is None:
        raise RuntimeError(f"{url}: the stream had no content")
    return first, tokens


async def _measure(url: str, headers: dict[str, str], model: str, streams: int,
                   rounds: int) -> dict[str, Any]:
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": "Write sixty-four words."}]}
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    ttfts: list[float] = []
    tokens = errors = 0
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        # Warm connections, caches and every worker process before timing.
        await asyncio.gather(*(_one_stream(client, url, headers, body) for _ in range(8)))
        started = time.perf_counter()
        for _ in range(rounds):
            results = await asyncio.gather(
                *(_one_stream(client, url, headers, body) for _ in range(streams)),
                return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    errors += 1
                else:
                    ttfts.append(result[0])
                    tokens += result[1]
        elapsed = time.perf_counter() - started
    return {"ttft_p50_ms": _pct(ttfts, 0.5), "ttft_p99_ms": _pct(ttfts, 0.99),
            "tokens_per_s": tokens / elapsed if elapsed else float("nan"), "errors": errors,
            "requests": len(ttfts)}


async def _register(base_url: str, admin_key: str, upstream_url: str) -> str:
    model_id = f"bench-fake-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{base_url}/v1/admin/models", headers={"Authorization": f"Bearer {admin_key}"},
            json={"id": model_id, "provider": "openai", "upstream_model": "fake-model",
                  "base_url": upstream_url, "api_key": "sk-bench", "timeout_s": 120,
                  "description": "benchmark: fake upstream"})
        response.raise_for_status()
    return model_id


async def run(base_url: str, admin_key: str, *, concurrencies: tuple[int, ...] = (1, 50, 200),
              tokens: int = TOKENS, ttft_ms: float = TTFT_MS, gap_ms: float = GAP_MS,
              scale: float = 1.0) -> list[dict[str, Any]]:
    """One row per concurrency: direct vs gateway TTFT (p50/p99) and aggregate tokens/s."""
    text = " ".join(f"w{i}" for i in range(tokens))
    rows: list[dict[str, Any]] = []
    with spawn_fake_upstream("openai", text=text, ttft_ms=ttft_ms, gap_ms=gap_ms) as fake_url:
        model_id = await _register(base_url, admin_key, fake_url)
        gateway_headers = {"Authorization": f"Bearer {admin_key}"}
        for streams in concurrencies:
            # Enough requests for a p99 at low concurrency; one or two waves at high.
            rounds = max(1, round((40 if streams == 1 else 2 if streams <= 50 else 1) * scale))
            direct = await _measure(f"{fake_url}/chat/completions", {}, "fake-model", streams,
                                    rounds)
            gateway = await _measure(f"{base_url}/v1/chat/completions", gateway_headers,
                                     model_id, streams, rounds)
            rows.append({
                "bench": f"gateway overhead, {streams} streams",
                "streams": streams, "requests": gateway["requests"],
                "upstream_ttft_ms": ttft_ms, "upstream_gap_ms": gap_ms, "tokens": tokens,
                "direct_ttft_p50_ms": direct["ttft_p50_ms"],
                "direct_ttft_p99_ms": direct["ttft_p99_ms"],
                "gateway_ttft_p50_ms": gateway["ttft_p50_ms"],
                "gateway_ttft_p99_ms": gateway["ttft_p99_ms"],
                "added_ttft_p50_ms": gateway["ttft_p50_ms"] - direct["ttft_p50_ms"],
                "added_ttft_p99_ms": gateway["ttft_p99_ms"] - direct["ttft_p99_ms"],
                "direct_tokens_per_s": direct["tokens_per_s"],
                "gateway_tokens_per_s": gateway["tokens_per_s"],
                "rate_ratio": gateway["tokens_per_s"] / direct["tokens_per_s"]
                if direct["tokens_per_s"] else float("nan"),
                "errors": direct["errors"] + gateway["errors"],
            })
    return rows


def main() -> None:
    from tests.bench.run import print_table
    from tests.bench.stack import bench_services, bench_stack

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import tempfile
    from pathlib import Path

    log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-gateway-"))
    with bench_services() as (db_url, redis_url), bench_stack(
        db_url, redis_url, worker_processes=2, worker_threads=128, log_dir=log_dir,
        env={"DB_POOL_SIZE": "20"},
    ) as stack:
        rows = asyncio.run(run(stack.base_url, stack.admin_key,
                               scale=0.25 if args.quick else 1.0))
    print_table(rows)
    print(f"p50 added TTFT at 50 streams: "
          f"{statistics.fmean(r['added_ttft_p50_ms'] for r in rows if r['streams'] == 50):.1f} ms"
          f"; logs in {log_dir}")


if __name__ == "__main__":
    main()
