"""The benchmark's HTTP load generator: the same client code for every target.

Why not httpx: at 500 paced streams the client must read ~25,000 SSE events a second,
and httpx's per-line machinery would make the client, not the target, the bottleneck on
a 2-core machine. This is a minimal HTTP/1.1 client on asyncio (uvloop) protocols with
llhttp's response parser (`httptools`; both come with `uvicorn[standard]`): one
keep-alive connection per concurrent request, a response body handled as it arrives,
SSE events split on blank lines and decoded with orjson.

It runs in its own processes (`LoadGenerator(processes=N)`, each `python -m
tests.bench.loadgen` talking pickles over its stdin/stdout), each with its own event loop
and a share of the connections, so its CPU can be read from /proc separately and it does
not share a GIL with the orchestrator. (Not multiprocessing's spawn: that would re-import
the orchestrator's main module, and with it every benchmark's imports, in each process.)
Every request loop is bounded by a deadline, a per-connection request count and a
per-request timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

_PROJECT_DIR = Path(__file__).resolve().parents[2]
_CONNECT_TIMEOUT_S = 10.0
_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class Load:
    """One measurement: `connections` concurrent requests, each connection in a loop."""

    url: str
    body: dict[str, Any]
    connections: int
    stream: bool
    # Each connection sends requests back to back until this many seconds after the start
    # (0: exactly one request per connection, all sent at the start).
    duration_s: float
    headers: dict[str, str] = field(default_factory=dict)
    # Connection i sends its first request at start + ramp_s * i / connections, so a
    # steady-state run does not begin with every request arriving in the same millisecond.
    ramp_s: float = 0.0
    max_requests_per_connection: int = 100_000
    timeout_s: float = 60.0
    # A stream counts as completed only with exactly this many words (None: any number).
    expect_words: int | None = None


@dataclass
class LoadResult:
    """What the clients saw. Times are time.monotonic() seconds, comparable across processes."""

    started: int = 0
    completed: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # whole response or stream
    ttfts_ms: list[float] = field(default_factory=list)  # first content word (streams)
    words: int = 0  # content words received, from completed and broken streams alike
    # Words received while every connection was busy: from start + ramp_s (all have sent
    # their first request) to start + duration_s (none starts another), and that window.
    steady_words: int = 0
    steady_s: float = 0.0
    begin: float = float("inf")  # the first request sent
    end: float = 0.0  # the last response finished

    @property
    def elapsed_s(self) -> float:
        return max(self.end - self.begin, 1e-9)

    def merge(self, other: LoadResult) -> None:
        self.started += other.started
        self.completed += other.completed
        self.errors += other.errors
        self.error_samples += other.error_samples[: _ERROR_SAMPLES - len(self.error_samples)]
        self.latencies_ms += other.latencies_ms
        self.ttfts_ms += other.ttfts_ms
        self.words += other.words
        self.steady_words += other.steady_words
        self.steady_s = max(self.steady_s, other.steady_s)
        self.begin = min(self.begin, other.begin)
        self.end = max(self.end, other.end)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _ERROR_SAMPLES:
            self.error_samples.append(message)


class LoadGenerator:
    """Worker processes that run `Load`s; a context manager that stops them on exit."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._workers: list[tuple[subprocess.Popen[bytes], Connection, Connection]] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _, _ in self._workers]

    def __enter__(self) -> LoadGenerator:
        try:
            for _ in range(self.processes):
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.bench.loadgen"], cwd=_PROJECT_DIR,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                assert process.stdin is not None and process.stdout is not None
                to_worker = Connection(os.dup(process.stdin.fileno()), readable=False)
                from_worker = Connection(os.dup(process.stdout.fileno()), writable=False)
                process.stdin.close()
                process.stdout.close()
                self._workers.append((process, to_worker, from_worker))
            for _, _, from_worker in self._workers:
                if not from_worker.poll(60) or from_worker.recv() != "ready":
                    raise RuntimeError("a load generator process did not start")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for _, to_worker, from_worker in self._workers:
            to_worker.close()  # end of input: the worker returns
            from_worker.close()
        for process, _, _ in self._workers:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._workers.clear()

    def run(self, load: Load) -> LoadResult:
        """Run `load` across the worker processes; block until all report."""
        if not self._workers:
            raise RuntimeError("LoadGenerator is not running")
        # Time for every process to open its connections before the common start.
        start_at = time.monotonic() + 0.5 + 0.002 * load.connections
        shares = [list(range(i, load.connections, len(self._workers)))
                  for i in range(len(self._workers))]
        busy = [(to_worker, from_worker, share) for (_, to_worker, from_worker), share
                in zip(self._workers, shares, strict=True) if share]
        for to_worker, _, share in busy:
            to_worker.send((load, share, start_at))
        wait_s = (start_at - time.monotonic()) + load.duration_s + load.timeout_s + 30
        result = LoadResult()
        for _, from_worker, _ in busy:
            if not from_worker.poll(wait_s):
                raise TimeoutError("a load generator process did not report")
            part = from_worker.recv()
            if isinstance(part, BaseException):
                raise RuntimeError("a load generator process failed") from part
            result.merge(part)
        return result


def _worker_main() -> None:
    """A load generator process: run each `Load` share it is sent until its input ends."""
    # Ctrl-C goes to the whole foreground process group; the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from_parent = Connection(os.dup(0), writable=False)
    to_parent = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the pickles on our stdout
    to_parent.send("ready")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        while True:
            try:
                load, share, start_at = from_parent.recv()
            except EOFError:  # the parent closed our input, or is gone
                return
            try:
                to_parent.send(runner.run(_run_share(load, share, start_at)))
            except Exception as exc:  # report it rather than leave the parent waiting
                to_parent.send(RuntimeError(f"{type(exc).__name__}: {exc}"))


async def _run_share(load: Load, slots: list[int], start_at: float) -> LoadResult:
    parts = urlsplit(load.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request_bytes(load, host, port, parts.path)
    result = LoadResult()
    deadline = start_at + load.duration_s
    steady = (start_at + load.ramp_s, deadline)
    result.steady_s = max(0.0, steady[1] - steady[0])
    connections = await asyncio.gather(*(_connect(host, port) for _ in slots),
                                       return_exceptions=True)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await asyncio.gather(*(
        _connection_loop(load, request, host, port, start_at + load.ramp_s * slot /
                         load.connections, deadline, steady, opened, result)
        for slot, opened in zip(slots, connections, strict=True)))
    return result


async def _connection_loop(load: Load, request: bytes, host: str, port: int,
                           first_at: float, deadline: float, steady: tuple[float, float],
                           connection: _Connection | BaseException, result: LoadResult) -> None:
    await asyncio.sleep(max(0.0, first_at - time.monotonic()))
    conn = connection if isinstance(connection, _Connection) else None
    for _ in range(load.max_requests_per_connection):
        if conn is None or conn.closed:
            try:
                conn = await _connect(host, port)
            except OSError as exc:
                result.error(f"connect: {exc}")
                conn = None
                await asyncio.sleep(0.05)
                if time.monotonic() >= deadline:
                    return
                continue
        await _exchange(load, request, conn, steady, result)
        if time.monotonic() >= deadline:
            break
    if conn is not None:
        conn.close()


async def _exchange(load: Load, request: bytes, conn: _Connection, steady: tuple[float, float],
                    result: LoadResult) -> None:
    exchange = _Exchange(load.stream, asyncio.get_running_loop().create_future(), steady)
    sent_at = time.monotonic()
    result.started += 1
    result.begin = min(result.begin, sent_at)
    conn.send(request, exchange)
    try:
        await asyncio.wait_for(exchange.done, load.timeout_s)
    except TimeoutError:
        conn.close()
        result.error(f"timeout after {load.timeout_s:g}s")
        return
    except (ConnectionError, httptools.HttpParserError) as exc:
        result.error(f"{type(exc).__name__}: {exc}")
        return
    finally:
        result.end = max(result.end, time.monotonic())
        result.words += exchange.words
        result.steady_words += exchange.steady_words
    if exchange.status != 200:
        result.error(f"HTTP {exchange.status}: {bytes(exchange.buffer[:200])!r}")
        return
    problem = exchange.problem(load.expect_words)
    if problem:
        result.error(problem)
        return
    result.completed += 1
    result.latencies_ms.append((exchange.finished_at - sent_at) * 1000)
    if exchange.first_word_at is not None:
        result.ttfts_ms.append((exchange.first_word_at - sent_at) * 1000)


def _request_bytes(load: Load, host: str, port: int, path: str) -> bytes:
    body = orjson.dumps(load.body)
    headers = {"Host": f"{host}:{port}", "Content-Type": "application/json",
               "Content-Length": str(len(body)), **load.headers}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


class _Exchange:
    """One response as it arrives: status, body (or SSE events), first word, finish."""

    __slots__ = ("stream", "done", "steady", "status", "buffer", "first_word_at",
                 "finished_at", "words", "steady_words", "text_parts", "saw_done",
                 "stream_error")

    def __init__(self, stream: bool, done: asyncio.Future[None],
                 steady: tuple[float, float]) -> None:
        self.stream = stream
        self.done = done
        self.steady = steady
        self.status = 0
        self.buffer = bytearray()
        self.first_word_at: float | None = None
        self.finished_at = 0.0
        self.words = 0
        self.steady_words = 0
        self.text_parts: list[str] = []
        self.saw_done = False
        self.stream_error: str | None = None

    def on_body(self, data: bytes) -> None:
        self.buffer += data
        if not self.stream or self.status != 200:
            return
        if b"\r" in data:
            self.buffer = self.buffer.replace(b"\r\n", b"\n")
        while (end := self.buffer.find(b"\n\n")) >= 0:
            event = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            self._on_event(event)

    def _on_event(self, event: bytes) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (keep-alives), event names, ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.saw_done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.stream_error = f"bad SSE data: {payload[:100]!r}"
                continue
            if "error" in chunk:
                self.stream_error = f"error event: {payload[:200]!r}"
                continue
            choices = chunk.get("choices")
            content = (choices[0].get("delta") or {}).get("content") if choices else None
            if content:
                now = time.monotonic()
                if self.first_word_at is None:
                    self.first_word_at = now
                self.text_parts.append(content)
                # Words, not chunks: a gateway may coalesce several words into one chunk.
                words = len(content.split())
                self.words += words
                if self.steady[0] <= now < self.steady[1]:
                    self.steady_words += words

    def problem(self, expect_words: int | None) -> str | None:
        """Why a 200 response does not count as a complete answer, or None."""
        if not self.stream:
            try:
                answer = orjson.loads(self.buffer)
                content = answer["choices"][0]["message"]["content"]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                return f"not a chat completion: {bytes(self.buffer[:200])!r}"
            return None if content else "empty completion"
        if self.stream_error:
            return self.stream_error
        if not self.saw_done:
            return "stream ended without [DONE]"
        # Count words in the joined text: a word may arrive split over two chunks.
        words = len("".join(self.text_parts).split())
        if expect_words is not None and words != expect_words:
            return f"stream had {words} words, expected {expect_words}"
        return None

    def finish(self) -> None:
        self.finished_at = time.monotonic()
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection closed: {exc or 'by the server'}"))

    # llhttp callbacks
    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_body(body)

    def on_message_complete(self) -> None:
        exchange, self.exchange = self.exchange, None
        if not self._keep_alive:
            self.close()
        if exchange is not None:
            exchange.finish()

    def send(self, request: bytes, exchange: _Exchange) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.transport.write(request)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.fail(exc)


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(_Connection, host, port), _CONNECT_TIMEOUT_S)
    return protocol


if __name__ == "__main__":
    # Run the imported module's copy, so results pickle as tests.bench.loadgen.LoadResult
    # (this file runs as __main__, which the parent cannot import).
    from tests.bench import loadgen

    loadgen._worker_main()
