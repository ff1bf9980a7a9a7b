"""Deployments: time from `POST /v1/deployments` to `running` for the project's model server
(`switchyard model-server`), and the chat overhead of going through a deployment (API, job,
worker, OpenAI-compatible provider) versus calling that server directly, at one client.

    python -m tests.bench.run --only deploy [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.bench.stack import bench_stack

SERVER = [sys.executable, "-m", "api.cli", "model-server", "--host", "{host}",
          "--port", "{port}"]
ENV = {"DEPLOY_TICK_S": "0.1", "DEPLOY_HEALTH_INTERVAL_S": "1",
       "DEPLOY_LEASE_TTL_S": "5", "MODEL_CACHE_TTL_S": "1", "DEPLOY_STOP_GRACE_S": "5"}
BODY = {"messages": [{"role": "user", "content": "one two three four"}]}


def _wait(http: httpx.Client, deployment_id: str, state: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = http.get(f"/v1/deployments/{deployment_id}").json()
        if row["state"] == state:
            return row  # type: ignore[no-any-return]
        if row["state"] == "failed":
            raise RuntimeError(f"deployment failed: {row['state_message']}")
        time.sleep(0.02)
    raise TimeoutError(f"deployment not {state} after {timeout_s}s")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(database_url: str, redis_url: str, log_dir: Path, *, rounds: int = 5,
        requests: int = 200) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with bench_stack(database_url, redis_url, worker_processes=2, worker_threads=16,
                     log_dir=log_dir, env=ENV) as stack, \
            httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=60) as http:
        to_running: list[float] = []
        last: dict[str, Any] = {}
        for index in range(rounds):
            started = time.perf_counter()
            response = http.post("/v1/deployments", json={
                "name": f"bench {index}", "model": f"bench/{uuid.uuid4().hex[:8]}",
                "upstream_model": "dev/echo",
                "target": {"type": "process", "command": SERVER, "port": "auto"}})
            response.raise_for_status()
            deployment = response.json()["deployment"]
            last = _wait(http, deployment["id"], "running")
            to_running.append((time.perf_counter() - started) * 1000)
            if index < rounds - 1:
                http.post(f"/v1/deployments/{deployment['id']}/stop")
                _wait(http, deployment["id"], "stopped")
        rows.append({"bench": "deploy: POST to running (model server)", "rounds": rounds,
                     "p50_ms": round(statistics.median(to_running), 1),
                     "min_ms": round(min(to_running), 1), "max_ms": round(max(to_running), 1)})
        time.sleep(1.5)  # every process's registry snapshot sees it loaded
        model, base_url = last["model"], last["base_url"]
        via: list[float] = []
        direct: list[float] = []
        # The same request to the in-process dev model: the job hop alone, so what the
        # deployment's own HTTP hop adds is `via - in_process`.
        in_process: list[float] = []
        with httpx.Client(timeout=60) as plain:
            for _ in range(10):  # warm both paths (connections, provider client)
                http.post("/v1/chat/completions", json={**BODY, "model": model})
                plain.post(f"{base_url}/chat/completions", json={**BODY, "model": "dev/echo"})
            for _ in range(requests):
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions", json={**BODY, "model": model})
                via.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                t0 = time.perf_counter()
                r = plain.post(f"{base_url}/chat/completions", json={**BODY, "model": "dev/echo"})
                direct.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions", json={**BODY, "model": "dev/echo"})
                in_process.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
        rows.append({"bench": "deploy: chat via deployment vs direct (1 client)",
                     "requests": requests,
                     "direct_p50_ms": round(_pct(direct, 0.5), 2),
                     "via_p50_ms": round(_pct(via, 0.5), 2),
                     "added_p50_ms": round(_pct(via, 0.5) - _pct(direct, 0.5), 2),
                     "direct_p95_ms": round(_pct(direct, 0.95), 2),
                     "via_p95_ms": round(_pct(via, 0.95), 2),
                     "in_process_dev_p50_ms": round(_pct(in_process, 0.5), 2)})
        http.post(f"/v1/deployments/{last['id']}/stop")
        _wait(http, last["id"], "stopped")
    return rows
