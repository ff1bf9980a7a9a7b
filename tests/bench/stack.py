"""A throw-away Switchyard for benchmarks: embedded Postgres and Redis, real processes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api.devservices import (
    create_database,
    free_port,
    log_tail,
    run_migrations,
    spawn,
    start_postgres,
    start_redis,
    stop_process,
    web_command,
    worker_command,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass
class BenchStack:
    base_url: str
    admin_key: str
    env: dict[str, str]
    log_dir: Path
    web: subprocess.Popen[bytes]
    workers: subprocess.Popen[bytes] | None = None
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def start_workers(self, processes: int, threads: int) -> None:
        self.workers = spawn(worker_command(processes, threads),
                             log_path=self.log_dir / "workers.log", env=self.env,
                             cwd=PROJECT_DIR)

    def stop_workers(self) -> None:
        if self.workers is not None:
            stop_process(self.workers, signal.SIGTERM, 30)
            self.workers = None

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stack not ready:\n{log_tail(self.log_dir / 'web.log')}\n"
                           f"{log_tail(self.log_dir / 'workers.log')}")

    def web_pid(self) -> int:
        return self.web.pid


@contextmanager
def bench_services() -> Iterator[tuple[str, str]]:
    """(database_url, redis_url): the configured ones, or embedded throw-away servers."""
    db_url, redis_url = os.environ.get("BENCH_DATABASE_URL"), os.environ.get("BENCH_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="sy-bench-") as tmp:
        services = []
        if not db_url:
            pg = start_postgres(Path(tmp) / "pg", durable=False)
            services.append(pg)
            db_url = pg.url
        if not redis_url:
            redis = start_redis(Path(tmp) / "redis")
            services.append(redis)
            redis_url = redis.url
        name = f"switchyard_bench_{uuid.uuid4().hex[:8]}"
        url = create_database(db_url, name)
        run_migrations(url, PROJECT_DIR)
        try:
            yield url, redis_url
        finally:
            for service in services:
                service.stop()


@contextmanager
def bench_stack(database_url: str, redis_url: str, *, worker_processes: int = 2,
                worker_threads: int = 16, env: Mapping[str, str] | None = None,
                log_dir: Path) -> Iterator[BenchStack]:
    port = free_port()
    full_env = {
        **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "SWITCHYARD_ADMIN_KEY": f"sy-bench-{secrets.token_urlsafe(12)}",
        "SWITCHYARD_SECRET_KEY": secrets.token_urlsafe(48),
        "WEBHOOK_SECRET": secrets.token_urlsafe(48), "OUTBOUND_ALLOW_PRIVATE": "true",
        # dev/lorem streams 20,000 tokens in the single-stream benchmark (cap: 4,096).
        "DEV_MODELS_ENABLED": "true", "DEV_MAX_TOKENS": "1000000",
        "SWITCHYARD_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(
        base_url=f"http://127.0.0.1:{port}", admin_key=full_env["SWITCHYARD_ADMIN_KEY"],
        env=full_env, log_dir=log_dir,
        web=spawn(web_command("127.0.0.1", port) + ["--no-access-log"],
                  log_path=log_dir / "web.log", env=full_env, cwd=PROJECT_DIR),
    )
    try:
        if worker_processes:
            stack.start_workers(worker_processes, worker_threads)
            stack.wait_ready()
        yield stack
    finally:
        stack.stop_workers()
        stop_process(stack.web, signal.SIGTERM, 10)
        for proc in stack.extra:
            stop_process(proc, signal.SIGTERM, 10)
