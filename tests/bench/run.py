"""`make bench`: every benchmark in one run, printed as a table and written as JSON.

Ratios are measured side by side in the same run, on the same machine and services.
`--quick` shrinks the sizes for a smoke run. From make: `make bench ARGS="--only gateway"`.
`--only gateway` compares Switchyard with LiteLLM's proxy and the bare upstream
(tests/bench/gateway.py) and prints its tables as markdown too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tests.bench import auth_overhead, chains, deployments, gateway, knowledge, spine
from tests.bench.stack import bench_services, bench_stack


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _finite(value: Any) -> Any:
    """`value` with NaN (a figure a target has not got) as null: NaN is not JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def print_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        name = row.get("bench", "?")
        rest = "  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "bench")
        print(f"| {name:<40} | {rest}")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds, so every server the benchmark started stops


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="",
                        help="comma-separated: hop,throughput,stream,chat,gateway,auth,knowledge,"
                        "deploy,chains")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--targets", default=",".join(gateway.TARGETS),
                        help="gateway: comma-separated targets to measure")
    parser.add_argument("--streams", default="50,200,500",
                        help="gateway: comma-separated concurrent stream levels")
    parser.add_argument("--duration", type=float, default=None,
                        help="gateway: seconds per figure (default 10, 3 with --quick)")
    parser.add_argument("--loadgen-processes", type=int, default=2)
    parser.add_argument("--fake-processes", type=int, default=2)
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    scale = 0.1 if args.quick else 1.0
    rows: list[dict[str, Any]] = []
    log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-logs-"))
    started = time.time()
    gateway_report: dict[str, Any] = {}
    with bench_services() as (db_url, redis_url):
        if not only or only & {"hop", "stream", "chat", "throughput"}:
            with bench_stack(db_url, redis_url, worker_processes=2, worker_threads=128,
                             log_dir=log_dir / "main",
                             env={"DB_POOL_SIZE": "20"}) as stack:
                if not only or "hop" in only:
                    for clients in (1, 50, 200):
                        rows.append(asyncio.run(spine.queue_hop(
                            stack, clients,
                            max(2, int((200 if clients == 1 else 10) * scale)))))
                        print_table(rows[-1:])
                if not only or "stream" in only:
                    rows.append(asyncio.run(spine.lorem_stream(stack, 1, int(20000 * scale))))
                    print_table(rows[-1:])
                    rows.append(asyncio.run(spine.lorem_stream(stack, 200, int(1000 * scale))))
                    print_table(rows[-1:])
                if not only or "chat" in only:
                    rows.append(asyncio.run(spine.chat_rate(stack, 50, int(5000 * scale))))
                    print_table(rows[-1:])
                if not only or "throughput" in only:
                    stack.stop_workers()
                    stack.start_workers(2, 16)
                    time.sleep(3)
                    rows.append(spine.job_throughput(stack, int(5000 * scale), 2, 16, log_dir))
                    print_table(rows[-1:])
        if not only or "gateway" in only:
            # Its own stacks, one target at a time, after the shared stack has stopped.
            options = gateway.Options(
                duration_s=args.duration or (3.0 if args.quick else 10.0),
                stream_levels=tuple(int(n) for n in args.streams.split(",") if n),
                targets=tuple(t for t in args.targets.split(",") if t),
                fake_processes=args.fake_processes,
                loadgen_processes=args.loadgen_processes)
            outcome = gateway.run(db_url, redis_url, log_dir / "gateway", options)
            gateway_report = {"setup": gateway.describe(options),
                              "comparison": gateway.comparison_rows(outcome),
                              "cpu_ms_per_request": gateway.cpu_rows(outcome),
                              "failures": outcome.failures}
            rows += [gateway.detail_row(m) for m in outcome.measurements]
        if not only or "deploy" in only:
            deploy_rows = deployments.run(db_url, redis_url, log_dir / "deploy",
                                          rounds=3 if args.quick else 5,
                                          requests=50 if args.quick else 200)
            rows += deploy_rows
            print_table(deploy_rows)
        if not only or "chains" in only:
            chain_rows = chains.run(db_url, redis_url, log_dir / "chains",
                                    rounds=2 if args.quick else 5)
            rows += chain_rows
            print_table(chain_rows)
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
    if gateway_report:
        report["gateway"] = gateway_report
    Path(args.out).write_text(json.dumps(_finite(report), indent=2))
    print("\nAll results:")
    print_table(rows)
    if gateway_report:
        print(f"\nGateway comparison ({gateway_report['setup']}):\n")
        print(gateway.markdown_table(gateway_report["comparison"]))
        print("\nCPU ms per completed request, by process group:\n")
        print(gateway.markdown_table(gateway_report["cpu_ms_per_request"], "target, figure"))
        for target, why in gateway_report["failures"].items():
            print(f"\n{target}: no figures: {why}")
    print(f"\nwritten to {args.out}; logs in {log_dir}")


if __name__ == "__main__":
    main()
