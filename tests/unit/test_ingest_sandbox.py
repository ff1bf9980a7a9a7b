"""Documents are read in reader processes: one that needs too much memory or time fails
there, with its code, and the next document is read by a fresh reader, while the process
that asked stays as it was."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("unstructured", reason="knowledge extra not installed")

from pipelines.errors import DocumentTooLarge, IngestTimedOut  # noqa: E402
from pipelines.ingest.limits import IngestLimits  # noqa: E402
from pipelines.ingest.prepare import ChunkOptions  # noqa: E402
from pipelines.ingest.sandbox import read_document  # noqa: E402
from tests.bench.ingest_probe import make_markdown  # noqa: E402
from tests.integration.processes import alive, children  # noqa: E402

SMALL_MEMORY = 32 * 1024 * 1024
LONG_S = 600.0


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def readers() -> set[int]:
    """This process's document readers: the children of its multiprocessing fork server."""
    servers = [pid for pid, cmdline in children(os.getpid()).items() if "forkserver" in cmdline]
    return {pid for server in servers for pid in children(server)}


def read(path: Path, limits: IngestLimits, deadline: float | None = None) -> int:
    """How many chunks the reader made of `path`."""
    prepared = read_document(path, None, path.name, ChunkOptions(), limits,
                             deadline or time.monotonic() + LONG_S)
    return len(prepared.chunks)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.md"
    path.write_text("# Title\n\nThe reader turns this sentence into one chunk.\n")
    return path


def test_a_document_needing_more_memory_than_allowed_fails_in_the_reader_not_here(
    tmp_path: Path, small: Path,
) -> None:
    limits = IngestLimits(max_memory_bytes=SMALL_MEMORY)
    assert read(small, limits) == 1  # the reader is up, so this process is measured warm
    big = tmp_path / "big.txt"
    big.write_text("A sentence that is long enough to matter here. " * 2_000_000)  # 96 MB
    before = resident_bytes()

    with pytest.raises(DocumentTooLarge) as caught:
        read(big, limits)

    assert caught.value.code == "DOCUMENT_TOO_LARGE"
    assert caught.value.details == {"limit": "bytes of memory", "max": SMALL_MEMORY}
    assert resident_bytes() - before < 16 * 1024 * 1024
    assert read(small, limits) == 1


def test_a_document_over_its_deadline_is_stopped_and_the_next_one_is_read(
    tmp_path: Path, small: Path,
) -> None:
    limits = IngestLimits(timeout_s=0.05)
    assert read(small, limits) == 1  # a reader is up and idle
    slow = tmp_path / "slow.md"
    slow.write_text(make_markdown(1_000_000))  # seconds of work

    with pytest.raises(IngestTimedOut) as caught:
        read(slow, limits, deadline=time.monotonic() + limits.timeout_s)

    assert caught.value.code == "INGEST_TIMEOUT"
    assert read(small, limits) == 1


def test_an_idle_reader_that_died_is_replaced_for_the_next_document(small: Path) -> None:
    limits = IngestLimits()
    assert read(small, limits) == 1
    idle = readers()
    assert idle
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    while any(alive(pid) for pid in idle):
        time.sleep(0.01)

    assert read(small, limits) == 1
    assert readers().isdisjoint(idle)


def test_a_reader_that_grew_past_an_eighth_of_its_allowance_retires_after_its_document(
    tmp_path: Path, small: Path,
) -> None:
    limits = IngestLimits(max_memory_bytes=64 * 1024 * 1024)  # retires past 8 MB of growth
    assert read(small, limits) == 1
    first = readers()
    larger = tmp_path / "larger.md"
    larger.write_text(make_markdown(300_000))  # grows a reader by about 15 MB

    assert read(larger, limits) > 100

    assert read(small, limits) == 1
    assert readers().isdisjoint(first)
