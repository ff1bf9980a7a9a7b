"""Reading documents in child processes, so a file that needs too much memory or time costs
a child, never the worker that asked.

A reader is a child process that partitions and chunks one document at a time
(`prepare_document`) and sends back plain chunks. Readers are forked from
multiprocessing's fork server, which imports the parsers once (`_PRELOAD`): importing
unstructured takes seconds (it pulls in spaCy and torch), forking a process that has done
so takes a fraction of one. The fork server is a clean interpreter started once per worker
process; forking the worker itself would copy locks its other threads hold.

A reader serves document after document, so a document pays only for sending its chunks
back. It is replaced when it dies, when a document runs out of time, and when it has grown
by an eighth of its memory allowance (`_RETIRE_FRACTION`; CPython seldom gives freed memory
back, so a reader would otherwise keep a large document's peak) or served `_MAX_DOCUMENTS`.

In a reader, RLIMIT_AS is its size at start plus `max_memory_bytes`, so a larger allocation
fails (MemoryError → DOCUMENT_TOO_LARGE), and RLIMIT_CPU allows each document its time
plus a margin, so a reader whose worker died still stops. The worker waits for the answer
until the deadline, then kills the reader (INGEST_TIMEOUT). What a parser logged in the
reader (e.g. why a file is corrupt) comes back with the answer and is logged here.

Readers belong to the worker process, like the fork server multiprocessing itself keeps
per process, hence the module-level pool; a forked process starts a pool of its own.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

from pipelines.errors import CorruptDocument, DocumentTooLarge, DomainError
from pipelines.ingest.limits import IngestLimits, timed_out, too_large
from pipelines.ingest.partition import opt_out_of_telemetry
from pipelines.ingest.prepare import ChunkOptions, PreparedDocument, prepare_document

log = logging.getLogger("switchyard.ingest")

# Imported once by the fork server, so each reader starts with them loaded.
_PRELOAD = [
    "pipelines.ingest.prepare", "unstructured.partition.text", "unstructured.partition.html",
    "unstructured.partition.docx", "unstructured.partition.csv",
    "unstructured.chunking.title", "pypdfium2", "markdown_it",
]
_RETIRE_FRACTION = 8
_MAX_DOCUMENTS = 200
_MAX_IDLE = 4
# CPU seconds a document may use beyond its time: the worker's wall-clock deadline comes
# first; this only stops a reader nobody waits for any more.
_CPU_MARGIN_S = 5
_REAP_TIMEOUT_S = 5.0

# (path, content type, filename, chunk options, limits, seconds left)
_Request = tuple[Path, str | None, str, ChunkOptions, IngestLimits, float]
# (kind: ok | refused | failed, payload, what parsers logged, whether the reader retires)
_Answer = tuple[str, Any, list[str], bool]


def read_document(path: Path, content_type: str | None, filename: str,
                  options: ChunkOptions, limits: IngestLimits,
                  deadline: float) -> PreparedDocument:
    """`prepare_document` in a reader process, answered by `deadline` (a `time.monotonic()`
    value): raises what it raises, DocumentTooLarge when the reader runs out of memory and
    IngestTimedOut when time runs out."""
    remaining_s = deadline - time.monotonic()
    if remaining_s <= 0:
        raise timed_out(filename, limits.timeout_s)
    request: _Request = (path, content_type, filename, options, limits, remaining_s)
    kind, payload, notes, _ = _pool().run(request, deadline)
    for note in notes:
        log.warning("reading %r: %s", filename, note)
    if kind == "refused":
        error_class, message, details = payload
        raise error_class(message, details=details)
    if kind == "failed":
        raise RuntimeError(f"the document reader failed on {filename!r}: {payload}")
    prepared: PreparedDocument = payload
    return prepared


class _Reader:
    """One reader process and the worker's end of its pipe."""

    def __init__(self, context: ForkServerContext, max_memory_bytes: int) -> None:
        self.max_memory_bytes = max_memory_bytes
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, max_memory_bytes),
                                       name="switchyard-document-reader", daemon=True)
        self.process.start()
        child_end.close()

    def ask(self, request: _Request, deadline: float) -> _Answer:
        """Send one document; the answer, or DomainError if the reader died or timed out."""
        filename, limits = request[2], request[4]
        self.connection.send(request)
        if not self.connection.poll(max(0.0, deadline - time.monotonic())):
            raise timed_out(filename, limits.timeout_s)
        try:
            answer: _Answer = self.connection.recv()
            return answer
        except EOFError:
            pass
        self.process.join(_REAP_TIMEOUT_S)
        code = self.process.exitcode
        if code == -signal.SIGXCPU:
            raise timed_out(filename, limits.timeout_s)
        if code == -signal.SIGKILL:  # the kernel's OOM killer (or an operator)
            raise too_large(filename, "bytes of memory", limits.max_memory_bytes)
        log.error("the reader of %r exited with %s without an answer", filename, code)
        raise CorruptDocument(f"{filename!r} could not be read.", details={"filename": filename})

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_REAP_TIMEOUT_S)
        self.connection.close()


class _Readers:
    """The worker process's idle readers; each document checks one out for itself."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._idle: list[_Reader] = []
        self._lock = threading.Lock()

    def run(self, request: _Request, deadline: float) -> _Answer:
        limits = request[4]
        reader = self._checkout(limits.max_memory_bytes)
        keep = False
        try:
            answer = reader.ask(request, deadline)
            keep = not answer[3]
            return answer
        finally:
            if keep:
                self._checkin(reader)
            else:
                reader.close()

    def _checkout(self, max_memory_bytes: int) -> _Reader:
        with self._lock:
            while self._idle:
                reader = self._idle.pop()
                if reader.process.is_alive() and reader.max_memory_bytes == max_memory_bytes:
                    return reader
                reader.close()
        return _Reader(_context(), max_memory_bytes)

    def _checkin(self, reader: _Reader) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(reader)
                return
        reader.close()


_readers: _Readers | None = None
_readers_lock = threading.Lock()


def _pool() -> _Readers:
    global _readers
    with _readers_lock:
        if _readers is None or _readers.pid != os.getpid():
            _readers = _Readers()
        return _readers


def _context() -> ForkServerContext:
    # The fork server imports `_PRELOAD` when it starts, so unstructured's telemetry
    # opt-out must be in the environment it inherits. Setting the preload list again once
    # the server runs changes nothing.
    opt_out_of_telemetry()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


# -- in the reader ----------------------------------------------------------------------------


class _Notes(logging.Handler):
    """Keeps what parsers log (WARNING and up), tracebacks included, to send back."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _serve(connection: Connection, max_memory_bytes: int) -> None:
    """Read documents until the worker closes the pipe, or this reader should retire."""
    # A terminal's Ctrl-C reaches the whole process group; the worker decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start = _memory()
    if start is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_at_most(start[0] + max_memory_bytes, hard), hard))
    notes = _Notes()
    logging.getLogger().handlers[:] = [notes]
    for served in range(1, _MAX_DOCUMENTS + 1):
        try:
            path, content_type, filename, options, limits, time_s = connection.recv()
        except EOFError:
            return
        _allow_cpu(time_s)
        notes.lines.clear()
        kind, payload = _prepare(path, content_type, filename, options, limits)
        now = _memory()
        retiring = (served == _MAX_DOCUMENTS or payload is _OUT_OF_MEMORY
                    or (start is not None and now is not None
                        and now[1] - start[1] > max_memory_bytes // _RETIRE_FRACTION))
        if payload is _OUT_OF_MEMORY:
            payload = _out_of_memory(filename, limits)
        try:
            connection.send((kind, payload, notes.lines, retiring))
        except MemoryError:  # pickling a large answer is an allocation too
            connection.send(("refused", _out_of_memory(filename, limits), notes.lines, True))
            return
        if retiring:
            return


_OUT_OF_MEMORY = object()


def _prepare(path: Path, content_type: str | None, filename: str, options: ChunkOptions,
             limits: IngestLimits) -> tuple[str, Any]:
    try:
        return "ok", prepare_document(path, content_type, filename, options, limits)
    except DomainError as exc:
        return "refused", (type(exc), exc.message, exc.details)
    except MemoryError:
        return "refused", _OUT_OF_MEMORY
    except Exception:
        return "failed", traceback.format_exc(limit=-8)


def _out_of_memory(filename: str, limits: IngestLimits) -> tuple[type[DomainError], str, Any]:
    error = too_large(filename, "bytes of memory", limits.max_memory_bytes)
    return DocumentTooLarge, error.message, error.details


def _allow_cpu(time_s: float) -> None:
    """RLIMIT_CPU counts the whole process: allow what is used so far plus this document's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    limit = math.ceil(usage.ru_utime + usage.ru_stime + time_s) + _CPU_MARGIN_S
    resource.setrlimit(resource.RLIMIT_CPU, (_at_most(limit, hard), hard))


def _at_most(value: int, hard: int) -> int:
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _memory() -> tuple[int, int] | None:
    """(address space, resident) bytes of this process from Linux /proc; None elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            size, resident = (int(field) for field in statm.read().split()[:2])
    except (OSError, ValueError):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    return size * page, resident * page
