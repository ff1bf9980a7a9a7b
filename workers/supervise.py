"""`python -m workers.supervise`: a host's worker processes, each replaced alone when it dies.

Dramatiq's CLI master stops every worker process as soon as one exits (by design, see
Bogdanp/dramatiq#376 and #505; 2.2 has no option to restart instead), so one process killed
for memory stopped a whole host. Here every worker process (workers/worker_process.py) is
a child of this supervisor:

- two groups (QUEUE_GROUPS in schemas/jobs.py): WORKER_PROCESSES I/O processes with
  WORKER_THREADS threads each, WORKER_CPU_PROCESSES CPU processes with WORKER_CPU_THREADS;
- a child that dies is replaced at once, then after 1, 2, 4 … 60 s if it keeps dying; its
  siblings never notice. Each child gets a broker id from us, so its unacked messages are
  handed back the moment it dies (`WakeableRedisBroker.release`) instead of after
  Dramatiq's heartbeat timeout;
- SIGTERM, SIGINT or SIGHUP: one SIGTERM to every child (running jobs finish, prefetched
  messages go back), and exit once all are gone; a second signal is forwarded too, which
  makes the children exit at once;
- a first child exiting with EXIT_CONFIG (its actors do not import, a queue has no group)
  stops everything with that code: restarting cannot fix code or configuration. A
  replacement that does so (new code on disk mid-deploy, say) is retried with backoff
  instead, so the processes still running go on serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

import redis

from pipelines.keys import Keys
from pipelines.log_throttle import RECONNECT_LOG_INTERVAL_S, Throttle
from pipelines.logs import configure_logging
from schemas.jobs import QueueGroup, queues_in
from schemas.settings import Settings
from workers.consumer import BROKER_ID_ENV, WakeableRedisBroker
from workers.metrics_server import WorkerMetrics
from workers.worker_process import EXIT_CONFIG, EXIT_OK

log = logging.getLogger("switchyard.supervisor")

# A child that ran this long had been working: its death restarts it at once.
STABLE_AFTER_S = 30.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
_POLL_S = 0.5
_RELEASE_RETRY_S = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def restart_delay_s(quick_deaths: int) -> float:
    """0 after a child that had been running fine; then 1, 2, 4 … 60 s while it keeps dying."""
    if quick_deaths == 0:
        return 0.0
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** min(quick_deaths - 1, 16))


def child_command(group: QueueGroup, threads: int) -> list[str]:
    return [sys.executable, "-m", "workers.worker_process",
            "--group", group.value, "--threads", str(threads)]


@dataclass
class Child:
    """One worker process slot: the process in it now, and how often it died young."""

    group: QueueGroup
    threads: int
    process: subprocess.Popen[bytes] | None = None
    broker_id: str = ""
    started_s: float = 0.0
    starts: int = 0
    quick_deaths: int = 0
    start_at_s: float = 0.0

    @property
    def queues(self) -> frozenset[str]:
        return queues_in(self.group)


class Releaser(Protocol):
    """Hands a dead worker process's unacked messages back (workers/consumer.py)."""

    def release(self, dead_broker_id: str, queue_names: Iterable[str]) -> None: ...


class RabbitmqReleases:
    """RabbitMQ requeues a consumer's unacked messages itself when its connection closes,
    which the kernel does when the process dies: nothing to hand back."""

    def release(self, dead_broker_id: str, queue_names: Iterable[str]) -> None:
        return None


@dataclass
class Supervisor:
    children: list[Child]
    broker: Releaser
    clock: Callable[[], float] = time.monotonic
    exit_code: int = EXIT_OK
    _stop_requests: int = 0
    _stops_forwarded: int = 0
    _unreleased: dict[str, frozenset[str]] = field(default_factory=dict)
    _release_at_s: float = 0.0
    _release_warnings: Throttle = field(
        default_factory=lambda: Throttle(RECONNECT_LOG_INTERVAL_S))
    # Extra environment of every child, and a hook told each dead child's pid (metrics).
    child_env: dict[str, str] = field(default_factory=dict)
    on_child_exit: Callable[[int], None] | None = None

    @property
    def stopping(self) -> bool:
        return self._stop_requests > 0

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Signal handler (it only counts; the loop acts)."""
        self._stop_requests += 1

    def run(self, wake_fd: int) -> int:
        """Supervise until every child is gone after a stop; returns the exit code."""
        try:
            while True:
                self._forward_stops()
                self._reap()
                self._release()
                if self.stopping:
                    if not any(child.process for child in self.children):
                        break
                else:
                    self._start_due()
                _sleep(wake_fd, self._next_wake_s())
        finally:
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
        if self._unreleased:
            log.warning("%d dead worker processes' messages were not handed back; Dramatiq "
                        "requeues them after BROKER_HEARTBEAT_TIMEOUT_MS", len(self._unreleased))
        return self.exit_code

    def _start_due(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.process is None and child.start_at_s <= now:
                child.broker_id = str(uuid.uuid4())
                env = {**os.environ, **self.child_env, BROKER_ID_ENV: child.broker_id}
                child.started_s = now
                child.starts += 1
                try:
                    child.process = subprocess.Popen(
                        child_command(child.group, child.threads), env=env,
                        stdin=subprocess.DEVNULL)
                except OSError as exc:
                    self._schedule_restart(child, f"could not start ({exc})")
                    continue
                log.info("started worker process %d", child.process.pid,
                         extra={"group": child.group.value, "threads": child.threads})

    def _reap(self) -> None:
        for child in self.children:
            if child.process is None or (code := child.process.poll()) is None:
                continue
            pid, child.process = child.process.pid, None
            if self.on_child_exit is not None:
                self.on_child_exit(pid)
            self._unreleased[child.broker_id] = child.queues
            self._release_at_s = 0.0
            if self.stopping:
                log.info("worker process %d stopped (%s)", pid, _describe(code))
                if code != EXIT_OK and self.exit_code == EXIT_OK:
                    self.exit_code = code if code > 0 else 1
            elif code == EXIT_CONFIG and child.starts == 1:
                log.critical("worker process %d cannot run (%s): stopping all of them",
                             pid, _describe(code))
                self.exit_code = EXIT_CONFIG
                self._stop_requests += 1
            else:
                self._schedule_restart(child, f"{pid} died ({_describe(code)})")

    def _schedule_restart(self, child: Child, what: str) -> None:
        now = self.clock()
        uptime_s = now - child.started_s
        if uptime_s >= STABLE_AFTER_S:
            child.quick_deaths = 0
        delay_s = restart_delay_s(child.quick_deaths)
        child.quick_deaths += 1
        child.start_at_s = now + delay_s
        log.error("worker process %s after %.0fs; replacing it in %.0fs", what, uptime_s,
                  delay_s, extra={"group": child.group.value})

    def _release(self) -> None:
        """Hand dead children's unacked messages back; retried while Redis is unreachable."""
        if not self._unreleased or self.clock() < self._release_at_s:
            return
        for broker_id, queues in list(self._unreleased.items()):
            try:
                self.broker.release(broker_id, queues)
            except redis.RedisError as exc:
                self._release_at_s = self.clock() + _RELEASE_RETRY_S
                if self._release_warnings.allow() is not None:
                    log.warning("could not hand a dead worker's messages back yet (%r); "
                                "retrying", exc)
                return
            del self._unreleased[broker_id]

    def _forward_stops(self) -> None:
        # The second stop is forwarded too (children then exit at once); later ones are not.
        while self._stops_forwarded < min(self._stop_requests, 2):
            self._stops_forwarded += 1
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)

    def _next_wake_s(self) -> float:
        due = [child.start_at_s for child in self.children
               if child.process is None and not self.stopping]
        if self._unreleased:
            due.append(self._release_at_s)
        return max(0.0, min([self.clock() + _POLL_S, *due]) - self.clock())


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m workers.supervise",
        description="Run and supervise this host's Dramatiq worker processes.")
    parser.add_argument("--processes", type=int, default=settings.worker_processes,
                        help="I/O worker processes (WORKER_PROCESSES)")
    parser.add_argument("--threads", type=int, default=settings.worker_threads,
                        help="concurrent jobs per I/O process (WORKER_THREADS)")
    parser.add_argument("--cpu-processes", type=int, default=settings.worker_cpu_processes,
                        help="CPU worker processes (WORKER_CPU_PROCESSES)")
    parser.add_argument("--cpu-threads", type=int, default=settings.worker_cpu_threads,
                        help="concurrent jobs per CPU process (WORKER_CPU_THREADS)")
    args = parser.parse_args(argv)
    configure_logging(settings.log_level, json_logs=settings.log_json)
    plan = ((QueueGroup.io, args.processes, args.threads),
            (QueueGroup.cpu, args.cpu_processes, args.cpu_threads))
    children = [Child(group, threads) for group, processes, threads in plan
                for _ in range(processes)]
    if not children:
        parser.error("no worker processes to run")
    broker: Releaser = RabbitmqReleases() if settings.uses_rabbitmq else WakeableRedisBroker(
        keys=Keys(settings.switchyard_namespace), url=settings.redis_url,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms, middleware=[])
    metrics = WorkerMetrics(port=settings.worker_metrics_port,
                            host=settings.worker_metrics_host,
                            directory=settings.worker_metrics_dir)
    metrics.start()
    supervisor = Supervisor(children, broker, child_env=metrics.child_env(),
                            on_child_exit=metrics.child_exited)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, supervisor.request_stop)
    # Any handled signal (a child's exit included) writes to this pipe and ends the wait.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    try:
        return supervisor.run(wake_read)
    finally:
        metrics.close()


def _sleep(wake_fd: int, timeout_s: float) -> None:
    """Wait up to `timeout_s`, or less if a signal arrives; then drain the wake-up pipe."""
    select.select([wake_fd], [], [], timeout_s)
    try:
        while os.read(wake_fd, 512):
            pass
    except BlockingIOError:
        pass


def _describe(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


if __name__ == "__main__":
    sys.exit(main())
