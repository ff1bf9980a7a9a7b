"""The gateway benchmark's own parts: the multi-process fake, the load generator, /proc CPU.

Real processes on loopback, no Postgres or Redis. Only lower bounds on time are asserted
(a paced stream cannot be faster than its pacing, however loaded the machine is).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.bench import procstat
from tests.bench.loadgen import Load, LoadGenerator
from tests.fakes.upstream import FakeProcesses, run_fake_upstream

WORDS = 5
TEXT = " ".join(f"w{i}" for i in range(WORDS))
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProcesses]:
    with run_fake_upstream("openai", processes=2, text=TEXT, record=False,
                           per_model={"paced": {"ttft_ms": 50, "gap_ms": 20},
                                      "broken": {"error_status": 503}}) as fake:
        yield fake


@pytest.fixture(scope="module")
def loadgen() -> Iterator[LoadGenerator]:
    with LoadGenerator(processes=2) as loadgen:
        yield loadgen


def _url(fake: FakeProcesses) -> str:
    return f"{fake.base_url}/chat/completions"


def test_two_fake_processes_share_one_port_and_both_stay_up(
    fake: FakeProcesses, loadgen: LoadGenerator
) -> None:
    result = loadgen.run(Load(_url(fake), {"model": "instant", "messages": MESSAGES}, 8,
                              stream=False, duration_s=0.3))
    assert len(set(fake.pids)) == 2
    assert all(procstat.cpu_ticks(pid) is not None for pid in fake.pids)
    assert result.errors == 0 and result.completed == result.started >= 8


def test_a_paced_model_streams_every_word_no_sooner_than_its_pacing(
    fake: FakeProcesses, loadgen: LoadGenerator
) -> None:
    body = {"model": "paced", "messages": MESSAGES, "stream": True}
    result = loadgen.run(Load(_url(fake), body, 6, stream=True, duration_s=0,
                              expect_words=WORDS))
    assert (result.started, result.completed, result.errors) == (6, 6, 0)
    assert result.words == 6 * WORDS
    assert min(result.ttfts_ms) >= 50
    # The first word comes with the first chunk; each later one waits one gap.
    assert min(result.latencies_ms) >= 50 + (WORDS - 1) * 20


def test_steady_words_are_counted_only_between_the_ramp_and_the_deadline(
    fake: FakeProcesses, loadgen: LoadGenerator
) -> None:
    body = {"model": "paced", "messages": MESSAGES, "stream": True}
    result = loadgen.run(Load(_url(fake), body, 4, stream=True, duration_s=1.5, ramp_s=0.3,
                              expect_words=WORDS))
    assert result.errors == 0 and result.completed >= 4
    assert result.steady_s == pytest.approx(1.2)
    # Words of the first streams (before the ramp ends) and of the last (after the
    # deadline) fall outside the window.
    assert 0 < result.steady_words < result.words == result.completed * WORDS


def test_a_stream_with_the_wrong_number_of_words_counts_as_an_error(
    fake: FakeProcesses, loadgen: LoadGenerator
) -> None:
    body = {"model": "instant", "messages": MESSAGES, "stream": True}
    result = loadgen.run(Load(_url(fake), body, 3, stream=True, duration_s=0,
                              expect_words=WORDS + 1))
    assert (result.completed, result.errors) == (0, 3)
    assert f"expected {WORDS + 1}" in result.error_samples[0]


def test_an_error_status_counts_as_an_error_and_keeps_its_body(
    fake: FakeProcesses, loadgen: LoadGenerator
) -> None:
    result = loadgen.run(Load(_url(fake), {"model": "broken", "messages": MESSAGES}, 2,
                              stream=False, duration_s=0))
    assert (result.completed, result.errors) == (0, 2)
    assert result.error_samples[0].startswith("HTTP 503") and "fake 503" in result.error_samples[0]


def test_an_unreachable_target_is_reported_not_waited_for(loadgen: LoadGenerator) -> None:
    with run_fake_upstream("openai") as gone:
        url = _url(gone)
    result = loadgen.run(Load(url, {"model": "m", "messages": MESSAGES}, 2, stream=False,
                              duration_s=0.2))
    assert result.completed == 0 and result.errors >= 2
    assert result.error_samples[0].startswith("connect")


def test_cpu_time_of_a_process_tree_counts_its_children() -> None:
    # A parent that only waits, and its child that burns 0.3 s of CPU and then waits too
    # (a process that exited would take its CPU time with it).
    burn = ("import sys, time\nwhile time.process_time() < 0.3: pass\n"
            "print('burnt', flush=True)\nsys.stdin.read()\n")
    with subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as parent:
        assert parent.stdin is not None and parent.stdout is not None
        try:
            assert parent.stdout.readline() == "burnt\n"
            everything = procstat.snapshot([procstat.ProcessGroup("tree", (parent.pid,))])
            alone = procstat.snapshot([procstat.ProcessGroup("tree", (parent.pid,),
                                                             tree=False)])
        finally:
            parent.stdin.close()
    # From an empty snapshot: all the CPU each process had used since it started.
    assert procstat.cpu_seconds_between({}, everything)["tree"] >= 0.29
    assert procstat.cpu_seconds_between({}, alone)["tree"] < 0.29
