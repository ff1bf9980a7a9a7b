"""`make bench`: every benchmark in one run, printed as a table and written as JSON.

Ratios are measured side by side in the same run, on the same machine and services.
`--quick` shrinks the sizes for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import auth_overhead, gateway, knowledge, spine
from tests.bench.stack import bench_services, bench_stack


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        name = row.get("bench", "?")
        rest = "  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "bench")
        print(f"| {name:<40} | {rest}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="",
                        help="comma-separated: hop,throughput,stream,chat,gateway,auth,knowledge")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    scale = 0.1 if args.quick else 1.0
    rows: list[dict[str, Any]] = []
    log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-logs-"))
    started = time.time()
    with bench_services() as (db_url, redis_url):
        with bench_stack(db_url, redis_url, worker_processes=2, worker_threads=128,
                         log_dir=log_dir / "main",
                         env={"DB_POOL_SIZE": "20"}) as stack:
            if not only or "hop" in only:
                for clients in (1, 50, 200):
                    rows.append(asyncio.run(spine.queue_hop(
                        stack, clients, max(2, int((200 if clients == 1 else 10) * scale)))))
                    print_table(rows[-1:])
            if not only or "stream" in only:
                rows.append(asyncio.run(spine.lorem_stream(stack, 1, int(20000 * scale))))
                print_table(rows[-1:])
                rows.append(asyncio.run(spine.lorem_stream(stack, 200, int(1000 * scale))))
                print_table(rows[-1:])
            if not only or "chat" in only:
                rows.append(asyncio.run(spine.chat_rate(stack, 50, int(5000 * scale))))
                print_table(rows[-1:])
            if not only or "gateway" in only:
                for row in asyncio.run(gateway.run(stack.base_url, stack.admin_key,
                                                   scale=scale)):
                    rows.append(row)
                    print_table([row])
            if not only or "throughput" in only:
                stack.stop_workers()
                stack.start_workers(2, 16)
                time.sleep(3)
                rows.append(spine.job_throughput(stack, int(5000 * scale), 2, 16, log_dir))
                print_table(rows[-1:])
        if not only or "knowledge" in only:
            knowledge_rows = knowledge.ingestion_throughput(
                db_url, pages=40 if args.quick else 200, md_mb=0.2 if args.quick else 1.0)
            knowledge_rows += knowledge.search_latency(
                db_url, sizes=(2_000, 10_000) if args.quick else (10_000, 100_000))
            rows += knowledge_rows
            print_table(knowledge_rows)
    if not only or "auth" in only:
        auth = auth_overhead.standalone(argparse.Namespace(
            requests=int(2000 * scale), concurrency=16, duration_s=8.0 * max(scale, 0.25)))
        rows.append({"bench": "auth + rate limit overhead", **{
            k: v for k, v in auth.items() if not isinstance(v, dict)},
            **{f"{name}_{k}": v for name, part in auth.items() if isinstance(part, dict)
               for k, v in part.items()}})
        print_table(rows[-1:])
    report = {"machine": {"cpus": __import__("os").cpu_count(),
                          "python": platform.python_version()},
              "started": started, "seconds": round(time.time() - started, 1), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\nAll results:")
    print_table(rows)
    print(f"\nwritten to {args.out}; logs in {log_dir}")


if __name__ == "__main__":
    main()
