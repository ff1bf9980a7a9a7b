"""The real system under test: `uvicorn` and `dramatiq` subprocesses on the session's
Postgres and Redis.

`stack` is shared by the tests of a module (starting it costs a few seconds) and has its
workers restarted if a previous test killed them. `start_stack(...)` starts a private
stack with its own worker counts and extra env (e.g. broker heartbeat tunings), torn
down after the test. Each stack has its own SWITCHYARD_NAMESPACE and admin key; all
share the run's database. Process output goes to files whose tails are printed when
startup or a test fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from api.devservices import (
    free_port,
    log_tail,
    spawn,
    stop_process,
    wait_or_kill,
    web_command,
    worker_command,
)
from tests.integration.jobclient import EventLogReader, client

PROJECT_DIR = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
WEB_STOP_TIMEOUT_S = 10.0
WORKERS_STOP_TIMEOUT_S = 20.0


@dataclass
class Stack:
    """One API process and one worker supervisor (with its worker processes)."""

    base_url: str
    admin_key: str
    namespace: str
    env: dict[str, str]
    log_dir: Path
    worker_processes: int
    worker_threads: int
    web: subprocess.Popen[bytes]
    workers: subprocess.Popen[bytes] | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def web_log(self) -> Path:
        return self.log_dir / "web.log"

    @property
    def workers_log(self) -> Path:
        return self.log_dir / "workers.log"

    def workers_running(self) -> bool:
        return self.workers is not None and self.workers.poll() is None

    def start_workers(self, *, wait_ready: bool = True) -> None:
        """Start the worker supervisor (if not running) and wait for /ready."""
        if not self.workers_running():
            self.workers = spawn(
                worker_command(self.worker_processes, self.worker_threads),
                log_path=self.workers_log,
                env=self.env,
                cwd=PROJECT_DIR,
            )
        if wait_ready:
            self.wait_ready()

    def kill_workers(
        self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = WORKERS_STOP_TIMEOUT_S
    ) -> int | None:
        """Signal the workers and wait for them to exit; returns the supervisor's exit code.

        SIGKILL goes to the whole process group (supervisor and worker processes die at
        once, like a lost host); other signals go to the supervisor, which forwards them, as a
        process manager would. Anything left after `timeout_s` is SIGKILLed.
        """
        if self.workers is None:
            return None
        if sig == signal.SIGKILL and self.workers.poll() is None:
            os.killpg(self.workers.pid, signal.SIGKILL)
        return stop_process(self.workers, sig, timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until GET /health and GET /ready answer 200, or fail with the logs."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            for path in ("/health", "/ready"):
                last = "no answer"
                while True:
                    self._fail_if_exited()
                    try:
                        response = client.get(path)
                        if response.status_code == 200:
                            break
                        last = f"{response.status_code} {response.text[:500]}"
                    except httpx.TransportError as exc:
                        last = repr(exc)
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"GET {path} not 200 after {timeout_s:.0f}s (last: {last})\n"
                            + self.logs(),
                            pytrace=False,
                        )
                    time.sleep(0.1)

    def logs(self) -> str:
        """Tails of the processes' output, for failure messages."""
        return (
            f"--- {self.web_log} ---\n{log_tail(self.web_log)}\n"
            f"--- {self.workers_log} ---\n{log_tail(self.workers_log)}"
        )

    def stop(self) -> None:
        """SIGTERM the API and the workers together, SIGKILL whatever outlives its timeout."""
        if self._stopped:
            return
        self._stopped = True
        processes = [(self.web, WEB_STOP_TIMEOUT_S)]
        if self.workers is not None:
            processes.append((self.workers, WORKERS_STOP_TIMEOUT_S))
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, timeout_s in processes:
            wait_or_kill(process, timeout_s)

    def _fail_if_exited(self) -> None:
        for name, process in (("uvicorn", self.web), ("dramatiq", self.workers)):
            if process is not None and process.poll() is not None:
                pytest.fail(
                    f"{name} exited with code {process.returncode}\n" + self.logs(),
                    pytrace=False,
                )


class StartStack(Protocol):
    def __call__(
        self,
        *,
        worker_processes: int = 1,
        worker_threads: int = 4,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> Stack: ...


def _start_stack(
    log_dir: Path,
    database_url: str,
    redis_url: str,
    *,
    worker_processes: int = 1,
    worker_threads: int = 4,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Stack:
    port = free_port()
    # Extra env wins, so a test may also override the defaults set here.
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SWITCHYARD_ADMIN_KEY": f"sy-test-{secrets.token_urlsafe(18)}",
        # Real secrets, as production requires (the API and workers refuse the defaults).
        "SWITCHYARD_SECRET_KEY": secrets.token_urlsafe(48),
        "WEBHOOK_SECRET": secrets.token_urlsafe(48),
        # Fake upstreams and webhook receivers listen on loopback.
        "OUTBOUND_ALLOW_PRIVATE": "true",
        # Most tests chat with dev/echo and dev/lorem, which are off by default.
        "DEV_MODELS_ENABLED": "true",
        # Tests submit bursts of jobs as plain users; tests/integration/test_concurrency.py
        # sets the per-tier limits it checks.
        "CONCURRENCY_LIMITS": '{"default": 1000, "pro": 1000, "admin": 0}',
        "SWITCHYARD_NAMESPACE": f"systack-{uuid.uuid4().hex[:12]}",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        admin_key=full_env["SWITCHYARD_ADMIN_KEY"],
        namespace=full_env["SWITCHYARD_NAMESPACE"],
        env=full_env,
        log_dir=log_dir,
        worker_processes=worker_processes,
        worker_threads=worker_threads,
        web=spawn(
            web_command("127.0.0.1", port),
            log_path=log_dir / "web.log",
            env=full_env,
            cwd=PROJECT_DIR,
        ),
    )
    try:
        stack.start_workers(wait_ready=False)
        stack.wait_ready(ready_timeout_s)
    except BaseException:
        stack.stop()
        raise
    return stack


_STACKS = pytest.StashKey[list[Stack]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Output printed in fixture teardown is not shown for a failed test, so attach the
    # stacks' log tails to the failing report itself.
    report = yield
    if report.failed and report.when in ("setup", "call"):
        stacks: list[Stack] = item.stash.get(_STACKS, [])
        for index, stack in enumerate(stacks):
            report.sections.append((f"stack {index} logs", stack.logs()))
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def start_stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
) -> Iterator[StartStack]:
    """Factory: `start_stack(worker_processes=1, worker_threads=4, env={...})` -> Stack."""
    stacks = request.node.stash.setdefault(_STACKS, [])
    started: list[Stack] = []

    def start(
        *,
        worker_processes: int = 1,
        worker_threads: int = 4,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> Stack:
        stack = _start_stack(
            tmp_path / f"stack{len(started)}",
            database_url,
            redis_url,
            worker_processes=worker_processes,
            worker_threads=worker_threads,
            env=env,
            ready_timeout_s=ready_timeout_s,
        )
        started.append(stack)
        stacks.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture(scope="module")
def _module_stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str
) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("stack"), database_url, redis_url)
    yield stack
    stack.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest, _module_stack: Stack) -> Stack:
    """The module's shared stack (1 worker process, 4 threads), with workers running."""
    request.node.stash.setdefault(_STACKS, []).append(_module_stack)
    if not _module_stack.workers_running():
        _module_stack.start_workers()
    return _module_stack


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    """An httpx client for the module's stack, as its admin."""
    with client(stack) as http:
        yield http


@pytest.fixture
def log(stack: Stack, redis_url: str) -> Iterator[EventLogReader]:
    """The stack's per-job event logs, read straight from Redis as ground truth."""
    with EventLogReader(redis_url, stack.namespace) as reader:
        yield reader
