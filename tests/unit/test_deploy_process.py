"""A model server child: launched in its own session, its output read line by line,
stopped with SIGTERM then SIGKILL, and killed by the kernel when its supervisor dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipelines.deploy.process import ModelProcess, expand, free_port, port_in_use

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _wait_for(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_port_and_host_are_substituted_into_the_command_and_env() -> None:
    assert expand("--port={port} --host {host}", "0.0.0.0", 8080) == \
        "--port=8080 --host 0.0.0.0"
    code = "import os; print(os.environ['PORT'], os.environ['X'], flush=True)"
    proc = ModelProcess([PY, "-c", code], host="127.0.0.1", port=4321,
                        env={"X": "at {port}"}, working_dir=None)
    try:
        _wait_for(lambda: proc.exit_code() is not None)
        assert proc.new_lines() == ["4321 at 4321"]
        assert proc.new_lines() == []
    finally:
        proc.discard_log()


def test_a_stop_sends_sigterm_first() -> None:
    code = "import time; print('up', flush=True); time.sleep(60)"
    proc = ModelProcess([PY, "-c", code], host="127.0.0.1", port=1, env={},
                        working_dir=None)
    _wait_for(lambda: proc.new_lines() == ["up"])
    assert asyncio.run(proc.stop(grace_s=10)) == -signal.SIGTERM
    proc.discard_log()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
    proc = ModelProcess([PY, "-c", code], host="127.0.0.1", port=1, env={},
                        working_dir=None)
    _wait_for(lambda: proc.new_lines() == ["up"])
    started = time.monotonic()
    assert asyncio.run(proc.stop(grace_s=0.5)) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5
    proc.discard_log()


def test_a_server_dies_with_the_process_that_launched_it() -> None:
    # The supervisor stand-in launches a child and is then killed with SIGKILL: the
    # kernel's parent-death signal must take the child with it.
    supervisor = subprocess.Popen([PY, "-c", (
        "from pipelines.deploy.process import ModelProcess; import sys, time; "
        "p = ModelProcess([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "host='127.0.0.1', port=1, env={}, working_dir=None); "
        "print(p.pid, flush=True); time.sleep(60)")], stdout=subprocess.PIPE,
        cwd=os.getcwd())
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    assert _alive(child)
    supervisor.kill()
    supervisor.wait()
    supervisor.stdout.close()
    _wait_for(lambda: not _alive(child))


def test_a_port_in_use_is_seen_and_a_free_one_is_found() -> None:
    port = free_port("127.0.0.1")
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use("127.0.0.1", port)


def test_a_command_that_does_not_exist_fails_to_launch() -> None:
    with pytest.raises(OSError):
        ModelProcess(["/no/such/model-server"], host="127.0.0.1", port=1, env={},
                     working_dir=None)
