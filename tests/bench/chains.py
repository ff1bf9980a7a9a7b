"""Chain overhead over its steps (issue 9's targets), measured through the real stack.

- sequential: a 10-position chain of `dev/echo` (each step's template is the previous
  output) streamed from POST to `execution_complete`, against the same 10 prompts sent as 10
  separate chat jobs one after another (their summed wall time). Target: <= 1.2x.
- fan-out: 8 `dev/lorem` steps at one position (100 ms between tokens) on 2 worker
  processes, wall time from POST to `execution_complete` against the slowest step's own
  duration. Target: <= 1.5x.

Medians over a few rounds after a warm-up round; run with `python -m tests.bench.run
--only chains`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from tests.bench.stack import bench_stack

SEQUENTIAL_STEPS = 10
FAN_OUT = 8
TOKEN_DELAY_MS = 100
FAN_OUT_TOKENS = 10
PROMPT = "the quick brown fox jumps over the lazy dog"


def _create(http: httpx.Client, prompts: list[dict[str, Any]]) -> str:
    response = http.post("/v1/chains", json={"name": "bench", "prompts": prompts,
                                             "input_fields": [{"name": "topic"}]})
    response.raise_for_status()
    return str(response.json()["id"])


def _run(http: httpx.Client, chain_id: str) -> tuple[float, list[dict[str, Any]]]:
    """(ms from POST to execution_complete, prompt_complete events)."""
    completes: list[dict[str, Any]] = []
    started = time.perf_counter()
    with connect_sse(http, "POST", f"/v1/chains/{chain_id}/run",
                     json={"inputs": {"topic": PROMPT}, "stream": True},
                     timeout=httpx.Timeout(120.0)) as source:
        source.response.raise_for_status()
        for sse in source.iter_sse():
            if not sse.data:  # keep-alive
                continue
            data = sse.json()
            if data["type"] == "prompt_complete":
                completes.append(data)
            elif data["type"] == "execution_complete":
                return (time.perf_counter() - started) * 1000, completes
            elif data["type"] == "execution_failed":
                raise RuntimeError(f"bench run failed: {data}")
    raise RuntimeError("the run's stream ended without execution_complete")


def _chat_jobs(http: httpx.Client, count: int) -> float:
    """Summed ms of `count` chat jobs (dev/echo, the same prompt), one after another."""
    total = 0.0
    for _ in range(count):
        started = time.perf_counter()
        response = http.post("/v1/chat/completions", json={
            "model": "dev/echo", "messages": [{"role": "user", "content": PROMPT}],
            "stream": True})
        response.raise_for_status()
        total += (time.perf_counter() - started) * 1000
    return total


def run(database_url: str, redis_url: str, log_dir: Path, *,
        rounds: int = 5) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with bench_stack(database_url, redis_url, worker_processes=2, worker_threads=64,
                     log_dir=log_dir, env={"WORKER_CPU_PROCESSES": "0"}) as stack, \
            httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=60) as http:
        sequential = _create(http, [
            {"name": f"S{i}", "position": i, "model": "dev/echo",
             "template": "{{topic}}" if i == 1 else f"{{{{S{i - 1}}}}}"}
            for i in range(1, SEQUENTIAL_STEPS + 1)])
        _run(http, sequential)
        _chat_jobs(http, 3)
        chain_ms: list[float] = []
        jobs_ms: list[float] = []
        for _ in range(rounds):
            chain_ms.append(_run(http, sequential)[0])
            jobs_ms.append(_chat_jobs(http, SEQUENTIAL_STEPS))
        chain_p50, jobs_p50 = statistics.median(chain_ms), statistics.median(jobs_ms)
        rows.append({"bench": f"chains: {SEQUENTIAL_STEPS}-step sequential dev/echo",
                     "rounds": rounds, "chain_ms": round(chain_p50, 1),
                     "chat_jobs_ms": round(jobs_p50, 1),
                     "ratio": round(chain_p50 / jobs_p50, 3), "target": 1.2})

        fan_out = _create(http, [
            {"name": f"F{i}", "position": 1, "model": "dev/lorem",
             "max_tokens": FAN_OUT_TOKENS, "template": "{{topic}}",
             "dev_options": {"token_delay_ms": TOKEN_DELAY_MS}}
            for i in range(1, FAN_OUT + 1)])
        _run(http, fan_out)
        walls: list[float] = []
        slowest: list[float] = []
        for _ in range(rounds):
            wall, completes = _run(http, fan_out)
            walls.append(wall)
            slowest.append(max(float(c["metadata"]["duration_ms"]) for c in completes))
        wall_p50, slow_p50 = statistics.median(walls), statistics.median(slowest)
        rows.append({"bench": f"chains: {FAN_OUT} parallel steps, 2 workers, "
                              f"{TOKEN_DELAY_MS} ms tokens",
                     "rounds": rounds, "wall_ms": round(wall_p50, 1),
                     "slowest_step_ms": round(slow_p50, 1),
                     "ratio": round(wall_p50 / slow_p50, 3), "target": 1.5})
    return rows
