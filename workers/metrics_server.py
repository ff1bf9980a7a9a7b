"""`/metrics` for a host's worker processes: prometheus-client's multiprocess mode, served by
the supervisor on one port (WORKER_METRICS_PORT).

Why one port for all processes rather than a port per process: worker processes come and
go (a killed one is replaced with a new pid, the I/O and CPU groups scale apart), and a
port per process would need a scrape target per slot that moves with every restart. In
multiprocess mode each child writes its samples to memory-mapped files in one directory
(the supervisor sets PROMETHEUS_MULTIPROC_DIR for it before it imports prometheus_client)
and the supervisor, which outlives them all, merges the files on each scrape. Counters of a
process that died stay counted, so a restart never makes a counter go backwards; the
in-flight gauges of a dead process are dropped (`mark_process_dead`). This is what
Dramatiq's own Prometheus middleware does under `dramatiq`'s CLI master; our supervisor
replaces that master (workers/supervise.py), so it does it here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("switchyard.worker_metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkerMetrics:
    """The samples directory the children write to, and the server that merges them."""

    def __init__(self, *, port: int, host: str, directory: str | None) -> None:
        self.port = port
        self.host = host
        self._owned = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="switchyard-metrics-"))
        self._server: Any = None

    def child_env(self) -> dict[str, str]:
        return {MULTIPROC_ENV: str(self.directory)}

    def start(self) -> None:
        """Empty the directory (samples of an earlier run would be merged in) and serve."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.db"):
            stale.unlink()
        if not self.port:
            return
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            # Metrics are not worth refusing to work for: say so loudly and run on.
            log.error("worker metrics not served on %s:%d: %s", self.host, self.port, exc)
            return
        log.info("worker metrics on http://%s:%d/metrics", self.host, self.port)

    def child_exited(self, pid: int) -> None:
        mark_process_dead(pid, str(self.directory))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
