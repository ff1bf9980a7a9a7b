"""`make bench ARGS="--only gateway"`: Switchyard side by side with LiteLLM's proxy.

One paced fake OpenAI upstream (TTFT 50 ms, a word every 20 ms, 64 words: model
`fake-paced`; `fake-instant` answers at once) and three targets measured one after the
other in the same run, each alone on the machine while it is measured, with the same
load generator (tests/bench/loadgen.py):

- direct: the fake itself, the floor for the machine;
- litellm: LiteLLM's proxy, 2 workers, no database (tests/bench/litellm.py);
- switchyard: 1 API process + the worker supervisor with `make run`'s defaults (the
  Settings defaults of WORKER_PROCESSES / WORKER_THREADS), the fake's two models
  registered through `POST /v1/admin/models`.

Figures per target: non-stream req/s on `fake-instant` over 50 keep-alive connections
for a fixed time; for each stream level (50, 200, 500 concurrent `fake-paced` streams,
each connection starting its next stream when one ends, first starts spread over one
stream's length) TTFT p50/p99, content words per second (over the whole run, and while
every connection was busy) and completed/started; CPU milliseconds per completed request
of every process group (read from /proc before and after). Switchyard also runs 500
`dev/lorem` streams x 100 tokens at 20 ms/token, all at once (ideal wall time 2 s).
`comparison_rows()` and `cpu_rows()` turn the measurements into the two tables, as dicts
for bench-results.json and, through `markdown_table()`, for the README.
"""

from __future__ import annotations

import math
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from schemas.settings import Settings
from tests.bench import procstat
from tests.bench.litellm import LITELLM_VERSION, litellm_proxy
from tests.bench.loadgen import Load, LoadGenerator, LoadResult
from tests.bench.stack import bench_stack
from tests.fakes.upstream import run_fake_upstream

TTFT_MS = 50.0
GAP_MS = 20.0
TOKENS = 64
STREAM_S = (TTFT_MS + (TOKENS - 1) * GAP_MS) / 1000  # one paced stream, start to end
INSTANT_MODEL = "fake-instant"
PACED_MODEL = "fake-paced"
REQUEST_CONNECTIONS = 50
LOREM_TOKENS = 100
LOREM_DELAY_MS = 20.0
TARGETS = ("direct", "litellm", "switchyard")
_MESSAGES = [{"role": "user", "content": "Write sixty-four words."}]
_READY_TIMEOUT_S = 60.0
LOADGEN_GROUP = "load generator"
# A load generator process busier than this (of one core) may be what limits a figure.
LOADGEN_SATURATED_PCT = 80.0


@dataclass(frozen=True)
class Options:
    duration_s: float = 10.0  # each request and stream measurement
    stream_levels: tuple[int, ...] = (50, 200, 500)
    lorem_streams: int = 500
    targets: tuple[str, ...] = TARGETS
    fake_processes: int = 2
    loadgen_processes: int = 2
    litellm_workers: int = 2


@dataclass
class Target:
    """Where one target takes chat completions, and which processes are its own."""

    name: str
    url: str
    headers: dict[str, str]
    instant_model: str
    paced_model: str
    groups: list[procstat.ProcessGroup]


@dataclass
class Measurement:
    target: str
    figure: str  # "requests", "streams" or "lorem"
    connections: int
    result: LoadResult
    cpu_s: dict[str, float]  # by process group, target's and shared ones
    target_groups: list[str]
    machine_cpu_s: float  # all cores' busy time between the two snapshots
    window_s: float  # wall time between the two snapshots
    loadgen_busiest_s: float  # CPU seconds of the busiest load generator process


@dataclass
class GatewayRun:
    measurements: list[Measurement] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # target → why it has no figures


def run(database_url: str, redis_url: str, log_dir: Path, options: Options) -> GatewayRun:
    """Measure every target in `options.targets`; a target that fails is reported, not fatal."""
    outcome = GatewayRun()
    text = " ".join(f"w{i}" for i in range(TOKENS))
    with ExitStack() as stack:
        fake = stack.enter_context(run_fake_upstream(
            "openai", processes=options.fake_processes, text=text, record=False,
            per_model={PACED_MODEL: {"ttft_ms": TTFT_MS, "gap_ms": GAP_MS}}))
        loadgen = stack.enter_context(LoadGenerator(options.loadgen_processes))
        shared = [procstat.ProcessGroup("fake upstream", tuple(fake.pids), tree=False),
                  procstat.ProcessGroup(LOADGEN_GROUP, tuple(loadgen.pids), tree=False)]
        for name in options.targets:
            opener = {"direct": _direct, "litellm": _litellm, "switchyard": _switchyard}[name]
            try:
                with opener(fake.base_url, database_url, redis_url, log_dir, options) as target:
                    outcome.measurements += _measure_target(target, loadgen, shared, options)
            except Exception as exc:  # one broken target must not cost the others' figures
                outcome.failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"gateway bench: target {name} failed:\n{traceback.format_exc()}",
                      flush=True)
    return outcome


# ------------------------------------------------------------------ targets


@contextmanager
def _direct(fake_url: str, database_url: str, redis_url: str, log_dir: Path,
            options: Options) -> Iterator[Target]:
    yield Target("direct", f"{fake_url}/chat/completions", {}, INSTANT_MODEL, PACED_MODEL, [])


@contextmanager
def _litellm(fake_url: str, database_url: str, redis_url: str, log_dir: Path,
             options: Options) -> Iterator[Target]:
    models = {INSTANT_MODEL: INSTANT_MODEL, PACED_MODEL: PACED_MODEL}
    with litellm_proxy(models, fake_url, workers=options.litellm_workers,
                       log_dir=log_dir / "litellm") as proxy:
        yield Target("litellm", f"{proxy.base_url}/v1/chat/completions", proxy.headers,
                     INSTANT_MODEL, PACED_MODEL,
                     [procstat.ProcessGroup("LiteLLM", (proxy.process.pid,))])


@contextmanager
def _switchyard(fake_url: str, database_url: str, redis_url: str, log_dir: Path,
                options: Options) -> Iterator[Target]:
    # `make run`'s worker processes and threads: the Settings defaults, whatever this
    # shell's environment says, so runs on different machines compare.
    defaults = Settings.model_fields
    processes = defaults["worker_processes"].default
    threads = defaults["worker_threads"].default
    with bench_stack(database_url, redis_url, worker_processes=processes,
                     worker_threads=threads, log_dir=log_dir / "switchyard") as stack:
        assert stack.workers is not None
        instant = _register(stack.base_url, stack.admin_key, fake_url, INSTANT_MODEL)
        paced = _register(stack.base_url, stack.admin_key, fake_url, PACED_MODEL)
        yield Target("switchyard", f"{stack.base_url}/v1/chat/completions", stack.headers,
                     instant, paced, [
                         procstat.ProcessGroup("API", (stack.web.pid,)),
                         procstat.ProcessGroup("workers", (stack.workers.pid,)),
                         procstat.ProcessGroup("Postgres", (_postmaster_pid(database_url),)),
                         procstat.ProcessGroup("Redis", (_redis_pid(redis_url),), tree=False),
                     ])


def _register(base_url: str, admin_key: str, upstream_url: str, upstream_model: str) -> str:
    model_id = f"bench-{upstream_model}-{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        f"{base_url}/v1/admin/models", headers={"Authorization": f"Bearer {admin_key}"},
        json={"id": model_id, "provider": "openai", "upstream_model": upstream_model,
              "base_url": upstream_url, "api_key": "sk-bench", "timeout_s": 120,
              "description": "benchmark: fake upstream"}, timeout=30)
    if response.status_code != 201:
        raise RuntimeError(f"registering {model_id}: {response.status_code} {response.text}")
    return model_id


def _postmaster_pid(database_url: str) -> int:
    """Postgres's main process: the parent of our backend (its backends are its children)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # Read while connected: the backend exits with the connection.
        fields = Path(f"/proc/{row[0]}/stat").read_text()
    return int(fields[fields.rindex(")") + 2 :].split()[1])


def _redis_pid(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


# ------------------------------------------------------------------ measuring


def _measure_target(target: Target, loadgen: LoadGenerator,
                    shared: list[procstat.ProcessGroup], options: Options) -> list[Measurement]:
    groups = target.groups + shared
    requests = Load(target.url, {"model": target.instant_model, "messages": _MESSAGES},
                    REQUEST_CONNECTIONS, stream=False, duration_s=options.duration_s,
                    headers=target.headers, timeout_s=60)

    def streams(connections: int) -> Load:
        body = {"model": target.paced_model, "messages": _MESSAGES, "stream": True}
        return Load(target.url, body, connections, stream=True, duration_s=options.duration_s,
                    headers=target.headers, ramp_s=STREAM_S, timeout_s=120,
                    expect_words=TOKENS)

    _warm_up(target, loadgen, requests, streams(min(20, max(options.stream_levels))))
    measured = [_measure(target, "requests", loadgen, requests, groups)]
    for connections in options.stream_levels:
        measured.append(_measure(target, "streams", loadgen, streams(connections), groups))
    if target.name == "switchyard" and options.lorem_streams:
        body = {"model": "dev/lorem", "messages": _MESSAGES, "stream": True,
                "max_tokens": LOREM_TOKENS, "dev_options": {"token_delay_ms": LOREM_DELAY_MS}}
        lorem = Load(target.url, body, options.lorem_streams, stream=True, duration_s=0,
                     headers=target.headers, timeout_s=300, expect_words=LOREM_TOKENS)
        measured.append(_measure(target, "lorem", loadgen, lorem, groups))
    return measured


def _warm_up(target: Target, loadgen: LoadGenerator, requests: Load, streams: Load) -> None:
    """Until one request succeeds (a registered model reaches every process within the
    registry's cache TTL), then a little of each load: connections, caches, every process."""
    first = Load(requests.url, requests.body, 1, stream=False, duration_s=_READY_TIMEOUT_S,
                 headers=requests.headers, max_requests_per_connection=1, timeout_s=30)
    for _ in range(int(_READY_TIMEOUT_S)):
        answer = loadgen.run(first)
        if answer.completed:
            break
    else:
        raise RuntimeError(f"{target.name} never answered: {answer.error_samples}")
    for load in (Load(requests.url, requests.body, requests.connections, stream=False,
                      duration_s=1.0, headers=requests.headers, timeout_s=30),
                 Load(streams.url, streams.body, streams.connections, stream=True,
                      duration_s=0, headers=streams.headers, timeout_s=60)):
        loadgen.run(load)


def _measure(target: Target, figure: str, loadgen: LoadGenerator, load: Load,
             groups: list[procstat.ProcessGroup]) -> Measurement:
    started = time.monotonic()
    before, machine_before = procstat.snapshot(groups), procstat.machine_busy_s()
    result = loadgen.run(load)
    after, machine_after = procstat.snapshot(groups), procstat.machine_busy_s()
    measurement = Measurement(target.name, figure, load.connections, result,
                              procstat.cpu_seconds_between(before, after),
                              [group.name for group in target.groups],
                              machine_after - machine_before, time.monotonic() - started,
                              procstat.busiest_process_s(before, after, LOADGEN_GROUP))
    line = detail_row(measurement)
    print(" ".join(f"{k}={_short(v)}" for k, v in line.items()), flush=True)
    if line["loadgen_busiest_pct"] > LOADGEN_SATURATED_PCT:
        print(f"warning: a load generator process was {line['loadgen_busiest_pct']:.0f}% busy: "
              f"this figure may be limited by the client; try --loadgen-processes", flush=True)
    return measurement


# ------------------------------------------------------------------ reporting


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return str(value)


def _ratio_cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}×"


def _label(m: Measurement) -> str:
    if m.figure == "requests":
        return f"non-stream, {m.connections} connections, instant upstream"
    if m.figure == "lorem":
        return f"{m.connections} dev/lorem streams x {LOREM_TOKENS} tokens at {LOREM_DELAY_MS:g} ms"
    return f"{m.connections} paced streams"


def detail_row(m: Measurement) -> dict[str, Any]:
    """Everything measured for one target and figure (one row of bench-results.json)."""
    r = m.result
    done = max(r.completed, 1)
    row: dict[str, Any] = {
        "bench": f"gateway {m.target}: {_label(m)}", "target": m.target, "figure": m.figure,
        "connections": m.connections, "started": r.started, "completed": r.completed,
        "errors": r.errors, "elapsed_s": r.elapsed_s,
    }
    if m.figure == "requests":
        row |= {"req_s": r.completed / r.elapsed_s, "latency_p50_ms": _pct(r.latencies_ms, 0.5),
                "latency_p99_ms": _pct(r.latencies_ms, 0.99)}
    else:
        # tokens_s: over the whole run, first request to last stream end. It is what a
        # target delivers even when it cannot keep up (then its queue fills for longer
        # than any steady window lasts). tokens_s_steady: only while every connection was
        # busy (after the ramp, before the deadline), comparable with the ideal
        # connections x 64 / 1.31 s for a target that keeps up.
        row |= {"ttft_p50_ms": _pct(r.ttfts_ms, 0.5), "ttft_p99_ms": _pct(r.ttfts_ms, 0.99),
                "tokens_s": r.words / r.elapsed_s}
        if m.figure == "streams":
            row |= {"tokens_s_steady": r.steady_words / r.steady_s if r.steady_s else math.nan,
                    "tokens_s_ideal": m.connections * TOKENS / STREAM_S}
    own = sum(m.cpu_s.get(name, 0.0) for name in m.target_groups)
    # The direct target has no processes of its own: the fake upstream is everyone's.
    row["cpu_ms_per_req_target"] = own * 1000 / done if m.target_groups else math.nan
    for name, seconds in m.cpu_s.items():
        row[f"cpu_ms_per_req_{name.replace(' ', '_').lower()}"] = seconds * 1000 / done
    row["cpu_s_other_programs"] = max(0.0, m.machine_cpu_s - sum(m.cpu_s.values()))
    row["machine_busy_pct"] = 100 * m.machine_cpu_s / (m.window_s * (os.cpu_count() or 1))
    row["loadgen_busiest_pct"] = 100 * m.loadgen_busiest_s / r.elapsed_s
    if r.error_samples:
        row["error_samples"] = " | ".join(r.error_samples[:3])
    return row


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def comparison_rows(run: GatewayRun) -> list[dict[str, Any]]:
    """One row per figure: each target's value, Switchyard÷LiteLLM and each ÷ direct."""
    details = {(m.target, m.figure, m.connections): detail_row(m) for m in run.measurements}
    keys = sorted({(m.figure, m.connections) for m in run.measurements},
                  key=lambda k: (["requests", "streams", "lorem"].index(k[0]), k[1]))
    rows: list[dict[str, Any]] = []

    def add(figure: str, value_of: Callable[[dict[str, Any]], Any], *, key: tuple[str, int],
            kind: str = "rate") -> None:
        """kind: "rate" (with ratios to LiteLLM and direct), "added" (minus direct, ratio
        to LiteLLM), "plain" (values only)."""
        values = {t: value_of(details[(t, *key)]) if (t, *key) in details else math.nan
                  for t in TARGETS}
        if kind == "added":
            values = {t: math.nan if t == "direct" else v - values["direct"]
                      for t, v in values.items()}
        row: dict[str, Any] = {"bench": f"gateway: {figure}", **values}
        if kind != "plain":
            row["switchyard/litellm"] = _ratio(values["switchyard"], values["litellm"])
        if kind == "rate":
            row["litellm/direct"] = _ratio(values["litellm"], values["direct"])
            row["switchyard/direct"] = _ratio(values["switchyard"], values["direct"])
        rows.append(row)

    for figure, connections in keys:
        key = (figure, connections)
        if figure == "requests":
            name = f"non-stream req/s, {connections} connections, instant"
            add(name, lambda d: d["req_s"], key=key)
            add("non-stream latency p50 ms", lambda d: d["latency_p50_ms"], key=key)
            add("non-stream errors", lambda d: d["errors"], kind="plain", key=key)
            add("non-stream CPU ms/request (target's processes)",
                lambda d: d["cpu_ms_per_req_target"], key=key)
            continue
        if figure == "lorem":
            name = f"{connections} dev/lorem streams x {LOREM_TOKENS} @ {LOREM_DELAY_MS:g} ms"
            ideal_s = LOREM_TOKENS * LOREM_DELAY_MS / 1000
            add(f"{name}: wall s (ideal {ideal_s:g} s)", lambda d: d["elapsed_s"],
                kind="plain", key=key)
        else:
            name = f"{connections} streams"
            add(f"{name}: TTFT added p50 ms", lambda d: d["ttft_p50_ms"], kind="added", key=key)
            add(f"{name}: TTFT added p99 ms", lambda d: d["ttft_p99_ms"], kind="added", key=key)
        add(f"{name}: TTFT p50 ms", lambda d: d["ttft_p50_ms"], key=key)
        add(f"{name}: TTFT p99 ms", lambda d: d["ttft_p99_ms"], key=key)
        if figure == "streams":
            add(f"{name}: tokens/s", lambda d: d["tokens_s"], key=key)
            ideal = connections * TOKENS / STREAM_S
            add(f"{name}: tokens/s while all stream (ideal {ideal:,.0f})",
                lambda d: d["tokens_s_steady"], key=key)
        add(f"{name}: completed / started", lambda d: f"{d['completed']:,}/{d['started']:,}",
            kind="plain", key=key)
        add(f"{name}: CPU ms/stream (target's processes)",
            lambda d: d["cpu_ms_per_req_target"], key=key)
    return rows


def cpu_rows(run: GatewayRun) -> list[dict[str, Any]]:
    """CPU ms per completed request of every process group, per target and figure: the
    target's own processes (and their total), then the fake upstream, the load generator
    and whatever else ran on the machine meanwhile (other sessions, the kernel's share)."""
    rows = []
    for m in run.measurements:
        done = max(m.result.completed, 1)
        row: dict[str, Any] = {"bench": f"gateway CPU ms/request: {m.target}, {_label(m)}"}
        own = [name for name in m.cpu_s if name in m.target_groups]
        row["target total"] = (sum(m.cpu_s[name] for name in own) * 1000 / done if own
                               else math.nan)
        for name in own + [name for name in m.cpu_s if name not in own]:
            row[name] = m.cpu_s[name] * 1000 / done
        other = max(0.0, m.machine_cpu_s - sum(m.cpu_s.values()))
        row["other programs"] = other * 1000 / done
        rows.append(row)
    shared = ["fake upstream", LOADGEN_GROUP, "other programs"]
    names = [k for row in rows for k in row if k != "bench"]
    order = [k for k in dict.fromkeys(names) if k not in shared] + shared
    return [{"bench": row["bench"], **{k: row.get(k, math.nan) for k in order}} for row in rows]


def markdown_table(rows: list[dict[str, Any]], first: str = "figure") -> str:
    """`rows` (dicts sharing a "bench" key) as a GitHub markdown table for the README;
    columns in the order they first appear."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k != "bench" and k not in columns]
    lines = [f"| {first} | " + " | ".join(columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for row in rows:
        name = str(row["bench"]).removeprefix("gateway: ").removeprefix(
            "gateway CPU ms/request: ")
        cells = ["" if c not in row else _ratio_cell(row[c]) if "/" in c else _short(row[c])
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(options: Options) -> str:
    """The setup line printed above the tables."""
    return (f"upstream: fake OpenAI, TTFT {TTFT_MS:g} ms, a word every {GAP_MS:g} ms, "
            f"{TOKENS} words ({options.fake_processes} processes); LiteLLM "
            f"{LITELLM_VERSION} proxy, {options.litellm_workers} workers, no database; "
            f"Switchyard: 1 API + worker supervisor (make run defaults); load generator: "
            f"{options.loadgen_processes} processes; {options.duration_s:g} s per figure")
