"""The `switchyard` command. `switchyard dev` is what `make run` does.

Each subcommand is one `_add_<name>` function registering its arguments and a handler
`(args) -> exit code`; settings are read here, at the entry point, and passed down.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import IntegrityError

from api.devservices import (
    RunningService,
    ServiceFailed,
    ensure_database,
    free_port,
    run_migrations,
    spawn,
    start_postgres,
    start_redis,
    web_command,
    worker_command,
)
from api.devsupervisor import DevSupervisor, StartupFailed
from schemas.accounts import ROLES

# Preferred ports for the embedded servers, off the system defaults (5432, 6379) so they
# coexist with system services; any free port is used if these are taken.
DEV_POSTGRES_PORT = 54329
DEV_REDIS_PORT = 63799
DEV_DATABASE_NAME = "switchyard"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="switchyard", description="Run and administer a Switchyard installation."
    )
    subcommands = parser.add_subparsers(dest="command", required=True)
    _add_dev(subcommands)
    _add_users(subcommands)
    _add_keys(subcommands)
    _add_model_server(subcommands)
    args = parser.parse_args(argv)
    return int(args.handler(args))


def _add_dev(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "dev",
        help="run the API and workers locally, starting Postgres and Redis if needed",
        description="Without DATABASE_URL/REDIS_URL, start Postgres (pgvector) and Redis "
        "under --var-dir; migrate; run the API and the worker supervisor in the foreground "
        "until Ctrl-C, restarting whichever of them dies.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--worker-processes", type=int,
                        help="I/O worker processes (default: WORKER_PROCESSES, or 2)")
    parser.add_argument("--worker-threads", type=int,
                        help="concurrent jobs per I/O worker process (default: WORKER_THREADS, "
                        "or 512)")
    parser.add_argument("--var-dir", type=Path, default=Path("var"))
    parser.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=30.0,
        help="how long workers get to finish their messages after Ctrl-C",
    )
    parser.set_defaults(handler=dev)


def dev(args: argparse.Namespace) -> int:
    """Run the whole system in the foreground, restarting what dies; Ctrl-C stops it in order."""
    interrupts = _Interrupts()
    interrupts.install()
    supervisor = DevSupervisor(_say)
    try:
        return _run_dev(args, supervisor, interrupts)
    except KeyboardInterrupt:
        return 1
    finally:
        _say("stopping …")
        try:
            if interrupts.count > 1:
                raise KeyboardInterrupt
            supervisor.stop(args.shutdown_timeout_s)
        except KeyboardInterrupt:
            _say("second Ctrl-C: killing")
            supervisor.kill()


def _run_dev(args: argparse.Namespace, supervisor: DevSupervisor,
             interrupts: _Interrupts) -> int:
    project_dir = Path.cwd()
    var_dir: Path = args.var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            _say("starting Postgres (pgvector) …")
            postgres_url = _keep_server(supervisor, "postgres", functools.partial(
                start_postgres, var_dir / "postgres", free_port(DEV_POSTGRES_PORT)))
            database_url = ensure_database(postgres_url, DEV_DATABASE_NAME)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            _say("starting Redis …")
            redis_url = _keep_server(supervisor, "redis", functools.partial(
                start_redis, var_dir / "redis", free_port(DEV_REDIS_PORT), durable=True))
        if not run_migrations(database_url, project_dir):
            _say("warning: no alembic.ini, skipping migrations")
    except ServiceFailed as exc:
        _say(str(exc))
        return 1
    admin_key = os.environ.get("SWITCHYARD_ADMIN_KEY") or _kept_secret(
        var_dir / "admin-key", "sy-dev-")
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SWITCHYARD_ADMIN_KEY=admin_key,
        # Development mode, but with real secrets of its own (kept in var/): sessions
        # and webhook signatures made here cannot be forged with the public defaults.
        SWITCHYARD_ENV=os.environ.get("SWITCHYARD_ENV", "development"),
        SWITCHYARD_SECRET_KEY=os.environ.get("SWITCHYARD_SECRET_KEY")
        or _kept_secret(var_dir / "secret-key"),
        WEBHOOK_SECRET=os.environ.get("WEBHOOK_SECRET")
        or _kept_secret(var_dir / "webhook-secret"),
        # dev/echo and dev/lorem: off by default, on for the local system.
        DEV_MODELS_ENABLED=os.environ.get("DEV_MODELS_ENABLED", "true"),
    )

    def start_api() -> subprocess.Popen[bytes]:
        return spawn(web_command(args.host, args.port), env=env, cwd=project_dir)

    from schemas.settings import Settings

    settings = Settings()
    workers = worker_command(
        settings.worker_processes if args.worker_processes is None else args.worker_processes,
        settings.worker_threads if args.worker_threads is None else args.worker_threads)

    def start_workers() -> subprocess.Popen[bytes]:
        return spawn(workers, env=env, cwd=project_dir)

    supervisor.keep("api", start_api(), start_api)
    supervisor.keep("workers", start_workers(), start_workers)
    _say(
        f"\nSwitchyard: http://{args.host}:{args.port}\n"
        f"  admin key  {admin_key}\n"
        f"  database   {database_url}\n"
        f"  redis      {redis_url}\n"
        "Ctrl-C to stop.\n"
    )
    try:
        supervisor.watch(lambda: interrupts.count > 0)
    except StartupFailed as exc:
        _say(str(exc))
        return 1
    return 0


def _keep_server(supervisor: DevSupervisor, name: str,
                 start: Callable[[], RunningService]) -> str:
    """Start a server, have `supervisor` restart it (same dir and port) if it dies; its URL."""
    service = start()
    supervisor.keep(name, service.process, lambda: start().process, server=True,
                    stop_signal=service.stop_signal)
    return service.url


def _add_users(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("users", help="manage user accounts")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="create a user (e.g. the first admin)",
        description="The password comes from --password, else SWITCHYARD_USER_PASSWORD, "
        "else a prompt (a command-line password is visible to other local users).")
    create.add_argument("--email", required=True)
    create.add_argument("--password")
    create.add_argument("--name")
    roles = create.add_mutually_exclusive_group()
    roles.add_argument("--role", choices=ROLES, default=None,
                       help="the user's role (default: user); operators act on jobs and "
                            "queues, viewers only read the dashboard")
    roles.add_argument("--admin", action="store_true", help="the same as --role admin")
    create.set_defaults(handler=create_user)


def create_user(args: argparse.Namespace) -> int:
    """Create a user in the configured database (DATABASE_URL)."""
    from pipelines import accounts
    from pipelines.db import users as users_db
    from pipelines.db.engine import sync_engine
    from schemas.settings import Settings

    password = args.password or os.environ.get("SWITCHYARD_USER_PASSWORD") or getpass.getpass()
    if len(password) < 8:
        _say("the password must be at least 8 characters")
        return 2
    engine = sync_engine(Settings().database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            row = conn.execute(users_db.insert_user(
                email=accounts.normalize_email(args.email),
                password_hash=accounts.hash_password(password), name=args.name,
                role="admin" if args.admin else args.role or "user")).one()
    except IntegrityError:
        _say(f"a user with email {args.email} already exists")
        return 1
    finally:
        engine.dispose()
    print(f"created {row.role} {row.email} (id {row.id})")
    return 0


def _add_keys(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser("keys", help="manage API keys")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an API key for a user; printed once")
    create.add_argument("--email", required=True, help="the user who owns the key")
    create.add_argument("--name", required=True, help="a label for the key")
    create.add_argument("--scope", action="append", default=[], dest="scopes")
    create.add_argument("--expires-days", type=int, help="expire after this many days")
    create.set_defaults(handler=create_key)


def create_key(args: argparse.Namespace) -> int:
    """Create an API key; the key goes to stdout (and only there), details to stderr."""
    from datetime import UTC, datetime, timedelta

    from pipelines import accounts
    from pipelines.db import api_keys as keys_db
    from pipelines.db import users as users_db
    from pipelines.db.engine import sync_engine
    from schemas.settings import Settings

    expires_at = (datetime.now(UTC) + timedelta(days=args.expires_days)
                  if args.expires_days else None)
    engine = sync_engine(Settings().database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            user = conn.execute(
                users_db.by_email(accounts.normalize_email(args.email))).first()
            if user is None:
                _say(f"no user with email {args.email}")
                return 1
            new = accounts.new_api_key()
            row = conn.execute(keys_db.insert_key(
                user_id=str(user.id), name=args.name, prefix=new.prefix,
                key_hash=new.key_hash, scopes=args.scopes, expires_at=expires_at)).one()
    finally:
        engine.dispose()
    _say(f"created key {row.id} ({row.prefix}…) for {user.email}; it is shown only now:")
    print(new.key)
    return 0


def _add_model_server(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "model-server",
        help="serve the dev models (dev/echo, dev/lorem) over the OpenAI wire format",
        description="A model server process of its own (GET /v1/models, POST "
        "/v1/chat/completions, GET /health), for `process` deployments on a machine "
        "without model weights or network.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="warning")
    parser.set_defaults(handler=model_server)


def model_server(args: argparse.Namespace) -> int:
    """Serve the dev models until SIGTERM; a port in use exits non-zero."""
    from api.model_server import serve

    serve(args.host, args.port, args.log_level)
    return 0


class _Interrupts:
    """SIGINT/SIGTERM handler: the first asks for a clean stop, the second forces it."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt


def _kept_secret(path: Path, prefix: str = "") -> str:
    """A random development secret, made once and kept at `path` so it survives restarts."""
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = f"{prefix}{secrets.token_urlsafe(36)}"
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
