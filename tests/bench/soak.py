"""Soak: mixed load against 2 API replicas and 2 worker supervisors for a long time (not CI).

    python -m tests.bench.soak --minutes 30 [--clients 8] [--json soak.json]

Embedded Postgres and Redis (or BENCH_DATABASE_URL / BENCH_REDIS_URL), two `uvicorn`
replicas and two worker supervisors on one database and one Redis, files in the default
Postgres store. Each client thread loops over a mix, alternating replicas: a streamed chat
(dev/lorem, 20 tokens), a whole chat (dev/echo), a `noop` job polled to its end, an upload
(a small unique markdown file) polled until ingested, and a keyword search. Every minute it
prints each route's request count, errors and p99; at the end, every process's RSS at the
start (after a one-minute warm-up) and at the end. Target: 0 errors, RSS growth < 10%.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from api.devservices import free_port, spawn, web_command, worker_command
from tests.bench.stack import PROJECT_DIR, bench_services, bench_stack

Sample = tuple[float, str, float, bool]  # (when, route, seconds, ok)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a supervisor's worker processes)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _rss(groups: dict[str, int]) -> dict[str, int]:
    return {f"{name}:{pid}": _rss_kib(pid) for name, root in groups.items()
            for pid in _tree(root)}


class Client:
    def __init__(self, urls: list[str], headers: dict[str, str], base_id: str,
                 samples: list[Sample], lock: threading.Lock) -> None:
        self.http = [httpx.Client(base_url=u, headers=headers, timeout=60) for u in urls]
        self.base_id = base_id
        self.samples = samples
        self.lock = lock
        self.turn = 0

    def _timed(self, route: str, fn: Callable[[httpx.Client], bool]) -> None:
        http = self.http[self.turn % len(self.http)]
        self.turn += 1
        started = time.perf_counter()
        try:
            ok = fn(http)
        except Exception:
            ok = False
        with self.lock:
            self.samples.append((time.time(), route, time.perf_counter() - started, ok))

    def one_round(self) -> None:
        self._timed("chat stream", self._chat_stream)
        self._timed("chat whole", lambda h: h.post("/v1/chat/completions", json={
            "model": "dev/echo", "messages": [{"role": "user", "content": "soak"}]}
        ).status_code == 200)
        self._timed("job", self._job)
        if random.random() < 0.2:
            self._timed("upload", self._upload)
        self._timed("search", lambda h: h.post("/v1/knowledge/search", json={
            "query": "soak lighthouse", "knowledge_ids": [self.base_id], "mode": "keyword"}
        ).status_code == 200)

    def _chat_stream(self, http: httpx.Client) -> bool:
        body = {"model": "dev/lorem", "stream": True, "max_tokens": 20,
                "messages": [{"role": "user", "content": "go"}],
                "dev_options": {"token_delay_ms": 10}}
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        return response.status_code == 200 and lines[-1] == "data: [DONE]"

    def _wait(self, http: httpx.Client, path: str, done: Callable[[dict[str, Any]], bool],
              timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body: dict[str, Any] = http.get(path).json()
            if done(body):
                return body
            time.sleep(0.1)
        return {}

    def _job(self, http: httpx.Client) -> bool:
        job = http.post("/v1/jobs", json={"kind": "noop", "input": {}}).json()
        end = self._wait(http, f"/v1/jobs/{job['id']}",
                         lambda j: j.get("status") in ("succeeded", "failed", "cancelled"))
        return end.get("status") == "succeeded"

    def _upload(self, http: httpx.Client) -> bool:
        text = f"# Soak {uuid.uuid4()}\n\nThe lighthouse keeper logs the soak run.\n"
        response = http.post(f"/v1/knowledge/{self.base_id}/documents",
                             files={"file": ("soak.md", text.encode(), "text/markdown")})
        if response.status_code != 202:
            return False
        doc_id = response.json()["document"]["id"]
        end = self._wait(http, f"/v1/documents/{doc_id}",
                         lambda d: d.get("status") in ("processed", "failed"))
        return end.get("status") == "processed"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def _minute_report(samples: list[Sample], since: float, until: float) -> dict[str, Any]:
    by_route: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if since <= sample[0] < until:
            by_route[sample[1]].append(sample)
    return {route: {"requests": len(rows), "errors": sum(not r[3] for r in rows),
                    "p99_ms": round(_p99([r[2] for r in rows]) * 1000, 1)}
            for route, rows in sorted(by_route.items())}


def _wait_healthy(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sy-soak-") as tmp, \
            bench_services() as (database_url, redis_url), \
            bench_stack(database_url, redis_url, worker_processes=1, worker_threads=64,
                        env={"EMBEDDING_PROVIDER": "hash"}, log_dir=Path(tmp)) as stack:
        port_b = free_port()
        web_b = spawn(web_command("127.0.0.1", port_b) + ["--no-access-log"],
                      log_path=Path(tmp) / "web-b.log", env=stack.env, cwd=PROJECT_DIR)
        workers_b = spawn(worker_command(1, 64), log_path=Path(tmp) / "workers-b.log",
                          env=stack.env, cwd=PROJECT_DIR)
        stack.extra += [web_b, workers_b]
        urls = [stack.base_url, f"http://127.0.0.1:{port_b}"]
        for url in urls:
            _wait_healthy(url)
        base = httpx.post(f"{stack.base_url}/v1/knowledge", headers=stack.headers,
                          json={"name": "soak"}, timeout=30).json()
        samples: list[Sample] = []
        lock = threading.Lock()
        stop = threading.Event()

        def loop() -> None:
            client = Client(urls, stack.headers, base["id"], samples, lock)
            while not stop.is_set():
                client.one_round()

        groups = {"web-a": stack.web.pid, "web-b": web_b.pid,
                  "workers-a": stack.workers.pid if stack.workers else 0,
                  "workers-b": workers_b.pid}
        threads = [threading.Thread(target=loop, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.warmup_minutes * 60)
        rss_start = _rss(groups)
        started = time.time()
        minutes = []
        for minute in range(int(args.minutes) or 1):
            time.sleep(min(60.0, args.minutes * 60))
            report = _minute_report(samples, started + minute * 60,
                                    started + (minute + 1) * 60)
            minutes.append(report)
            print(f"minute {minute + 1}: {json.dumps(report)}", flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=180)
        rss_end = _rss(groups)
        measured = [s for s in samples if s[0] >= started]
        growth = {k: round((rss_end.get(k, 0) - v) / v * 100, 1) for k, v in rss_start.items()
                  if v and k in rss_end}
        summary = {
            "minutes": args.minutes, "clients": args.clients,
            "requests": len(measured), "errors": sum(not s[3] for s in measured),
            "p99_ms": _minute_report(measured, started, time.time()),
            "rss_kib_start": rss_start, "rss_kib_end": rss_end, "rss_growth_pct": growth,
            "max_rss_growth_pct": max(growth.values(), default=0.0),
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"minutes_report": minutes, **summary}, indent=2))
        web_b.send_signal(signal.SIGTERM)


if __name__ == "__main__":
    main()
