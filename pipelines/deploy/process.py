"""A model server child process: launched to die with its supervisor, stopped gracefully.

The child is started in its own session (so a stop reaches whatever it forks) with Linux's
`PR_SET_PDEATHSIG`: if the worker process that supervises it is killed (even with
SIGKILL), the kernel sends the child SIGKILL. That is what makes adoption safe: another
worker that claims the expired lease may start a new server, because the old one cannot
outlive its supervisor. (The death signal fires when the *thread* that forked exits, so
children are spawned from the event loop thread, which lives as long as the process.)

Output goes to a file on the local disk, which only this supervisor reads; it copies new
lines into a capped Redis stream that every host can read (`GET /v1/deployments/{id}/logs`).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_READ_CHUNK = 256 * 1024


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port(host: str) -> int:
    """A port free on `host` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def expand(value: str, host: str, port: int) -> str:
    return value.replace("{port}", str(port)).replace("{host}", host)


class ModelProcess:
    """One launched model server and its output file."""

    def __init__(self, command: Sequence[str], *, host: str, port: int,
                 env: Mapping[str, str], working_dir: str | None) -> None:
        self.port = port
        args = [expand(part, host, port) for part in command]
        child_env = {**os.environ, **{k: expand(v, host, port) for k, v in env.items()},
                     "PORT": str(port), "HOST": host}
        fd, name = tempfile.mkstemp(prefix="switchyard-deploy-", suffix=".log")
        self.log_path = Path(name)
        self._offset = 0
        self._partial = b""
        try:
            self.process = subprocess.Popen(
                args, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env, cwd=working_dir or None, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            os.close(fd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """None while it runs."""
        return self.process.poll()

    def new_lines(self, limit: int = 1000) -> list[str]:
        """Whole lines written since the last call (at most `limit`, the newest)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._offset)
                data = log.read(_READ_CHUNK)
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if self.exit_code() is not None and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [line.decode("utf-8", "replace") for line in lines[-limit:]]

    async def stop(self, grace_s: float) -> int:
        """SIGTERM its session, SIGKILL whatever is left after `grace_s`; its exit code."""
        self._signal(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.process.poll() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self._signal(signal.SIGKILL)
        while self.process.poll() is None:
            await asyncio.sleep(0.02)
        return self.process.returncode

    def kill_now(self) -> None:
        """SIGKILL at once (the lease was lost: another supervisor may start it)."""
        self._signal(signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def discard_log(self) -> None:
        self.log_path.unlink(missing_ok=True)

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
