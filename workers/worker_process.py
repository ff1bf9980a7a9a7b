"""One worker process of a queue group: `python -m workers.worker_process --group io`.

workers/supervise.py starts these. Each does what Dramatiq's CLI does in a worker process
(`dramatiq.cli.worker_process`): import the broker and every actor (`workers.main`), emit
`process_boot`, run a `dramatiq.Worker` on its group's queues, and on SIGTERM stop it
gracefully — running jobs finish, prefetched messages go back. Unlike under the CLI there
is no master that stops every sibling when one process dies, and no intermediate process:
the pid the supervisor waits on is the one holding the messages.

A second SIGTERM exits at once (the supervisor hands the unfinished messages back). SIGINT
and SIGHUP are ignored: a terminal sends them to the whole process group, and the
supervisor forwards the one SIGTERM that counts. If the supervisor itself disappears, this
process stops as if it had sent SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

import dramatiq

from pipelines.log_throttle import RECONNECT_LOG_INTERVAL_S, ThrottleRepeats
from pipelines.logs import configure_logging
from schemas.jobs import QUEUE_GROUPS, QueueGroup, queues_in
from schemas.settings import Settings

log = logging.getLogger("switchyard.worker_process")

# Exit codes the supervisor acts on. Restarting cannot fix a process that cannot import its
# actors or would leave a queue unconsumed, so EXIT_CONFIG stops the whole supervisor.
EXIT_OK = 0
EXIT_KILLED = 1
EXIT_CONFIG = 2
EXIT_BOOT = 3

ACTORS_MODULE = "workers.main"
# Dramatiq's own default (`dramatiq --worker-shutdown-timeout`): the process manager's
# grace period (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds) is the
# limit that matters.
SHUTDOWN_TIMEOUT_MS = 600_000
_POLL_S = 0.2

# Warnings logged on every reconnect attempt while Redis is down, by Dramatiq's consumer
# threads (dramatiq/worker.py) and our own background threads; one per interval is enough.
# tests/unit/test_worker_process.py checks each still appears in its module's source.
RECONNECT_NOISE = {
    "dramatiq.worker": (
        "Consumer encountered a connection error: %s",
        "Restarting consumer in %0.2f seconds.",
    ),
    "workers.presence": ("worker heartbeat failed",),
    "workers.sweeper": ("sweeper pass failed",),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.worker_process")
    parser.add_argument("--group", type=QueueGroup, choices=list(QueueGroup), required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    stop = _StopSignals()
    stop.install()
    queues = queues_in(args.group)
    try:
        settings = Settings()
        # Dramatiq and the libraries log through the root logger, ours through "switchyard".
        configure_logging(settings.log_level, json_logs=settings.log_json, logger="")
        importlib.import_module(ACTORS_MODULE)
    except Exception:
        log.exception("cannot start: invalid settings, or the actors (%s) do not import",
                      ACTORS_MODULE)
        return EXIT_CONFIG
    _throttle_reconnect_noise()
    broker = dramatiq.get_broker()
    unassigned = broker.get_declared_queues() - set(QUEUE_GROUPS)
    if unassigned or not queues:
        log.error("no worker process would consume queues %s: give each a group in "
                  "QUEUE_GROUPS (schemas/jobs.py)", sorted(unassigned) or args.group.value)
        return EXIT_CONFIG
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, queues=set(queues), worker_threads=args.threads)
    try:
        worker.start()
    except Exception:
        # Middleware builds its clients here; a service that is down may be back soon.
        log.exception("worker boot failed")
        return EXIT_BOOT
    log.info("worker process ready", extra={"group": args.group.value,
                                            "queues": sorted(queues), "threads": args.threads})
    stop.wait()
    worker.stop(timeout=SHUTDOWN_TIMEOUT_MS)
    broker.close()
    return EXIT_OK


class _StopSignals:
    """The first SIGTERM asks for a graceful stop, the second exits now."""

    def __init__(self) -> None:
        self.requested = False
        self._parent = os.getppid()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def wait(self) -> None:
        # A sleep loop, not an Event: a signal handler must not take a lock the thread it
        # interrupts may hold.
        while not self.requested:
            time.sleep(_POLL_S)
            if os.getppid() != self._parent:
                log.warning("the supervisor is gone: stopping")
                self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            # Not sys.exit: interpreter shutdown would wait on executor threads.
            os._exit(EXIT_KILLED)
        self.requested = True


def _throttle_reconnect_noise() -> None:
    # Handlers, not loggers: a logger's filters see only records logged on that very logger.
    noise = ThrottleRepeats((template for templates in RECONNECT_NOISE.values()
                             for template in templates), RECONNECT_LOG_INTERVAL_S)
    for name in ("", "switchyard"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(noise)


def _exit(code: int) -> NoReturn:
    """Exit without tearing the interpreter down, as Dramatiq's CLI processes do.

    Every message is acked or requeued by now; unloading thousands of modules (torch,
    unstructured) would only add seconds of CPU to every stop.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
