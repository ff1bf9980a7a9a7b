"""What `switchyard dev` runs, kept running: Postgres, Redis, the API and the workers.

A server that dies (killed, out of memory) is started again on the same data dir and port,
so the URLs the API and workers were given stay right; they reconnect on their own (their
reconnect warnings are throttled where they are logged). The API or the worker supervisor
is restarted too — unless it dies within `STARTUP_GRACE_S` of its first start, which is a
start-up failure (a port in use, broken code or configuration): then everything stops and
`switchyard dev` exits, as before. One worker process dying is handled inside the worker
supervisor (workers/supervise.py) and never reaches this level.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.devservices import ServiceFailed, stop_process, wait_or_kill

STARTUP_GRACE_S = 20.0
# A child that ran this long had been working: its death restarts it at once.
STABLE_AFTER_S = 30.0
MAX_BACKOFF_S = 30.0
_POLL_S = 0.2


class StartupFailed(RuntimeError):
    """An app died right after its first start; the message says which and how."""


@dataclass
class Supervised:
    """One child of `switchyard dev`. `start` returns once the child is up (servers: ready)."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    server: bool
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    starts: int = 0
    quick_deaths: int = 0
    start_at_s: float = 0.0


@dataclass
class DevSupervisor:
    say: Callable[[str], None]
    children: list[Supervised] = field(default_factory=list)

    def keep(self, name: str, process: subprocess.Popen[bytes],
             start: Callable[[], subprocess.Popen[bytes]], *, server: bool = False,
             stop_signal: signal.Signals = signal.SIGTERM) -> None:
        """Keep a started child running: `start()` starts it again when it dies."""
        self.children.append(Supervised(name, start, server, stop_signal, process,
                                        started_s=time.monotonic(), starts=1))

    def watch(self, stopped: Callable[[], bool]) -> None:
        """Restart children that die until `stopped()`; raises StartupFailed."""
        while not stopped():
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and (code := child.process.poll()) is not None:
                    self._died(child, code, now)
                if child.process is None and child.start_at_s <= now and not stopped():
                    try:
                        self._start(child)
                    except ServiceFailed as exc:
                        self.say(str(exc))
                        self._schedule(child, time.monotonic())
            time.sleep(_POLL_S)

    def stop(self, timeout_s: float) -> None:
        """Stop the apps together (they drain in parallel), then the servers, newest first."""
        apps = [child.process for child in self.children
                if not child.server and child.process is not None]
        for process in apps:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in apps:
            wait_or_kill(process, max(0.0, deadline - time.monotonic()))
        for child in reversed(self.children):
            if child.server and child.process is not None:
                stop_process(child.process, child.stop_signal)

    def kill(self) -> None:
        for child in self.children:
            if child.process is not None:
                stop_process(child.process, signal.SIGKILL, timeout_s=1.0)

    def _start(self, child: Supervised) -> None:
        self.say(f"restarting {child.name} …")
        child.process = child.start()
        child.started_s = time.monotonic()
        child.starts += 1

    def _died(self, child: Supervised, code: int, now: float) -> None:
        child.process = None
        how = _describe(code)
        uptime_s = now - child.started_s
        if not child.server and child.starts == 1 and uptime_s < STARTUP_GRACE_S:
            raise StartupFailed(f"{child.name} exited with {how} right after it started")
        if uptime_s >= STABLE_AFTER_S:
            child.quick_deaths = 0
        delay_s = self._schedule(child, now)
        self.say(f"{child.name} exited with {how}; restarting it"
                 + (f" in {delay_s:.0f}s" if delay_s else ""))

    def _schedule(self, child: Supervised, now: float) -> float:
        delay_s = 0.0 if child.quick_deaths == 0 else min(
            MAX_BACKOFF_S, 2.0 ** min(child.quick_deaths - 1, 8))
        child.quick_deaths += 1
        child.start_at_s = now + delay_s
        return delay_s


def _describe(code: int) -> str:
    if code >= 0:
        return f"code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"
