"""LiteLLM's proxy as a benchmark target, installed into its own virtualenv under var/.

LiteLLM is never a dependency of the project: the benchmark creates
`var/bench-litellm-venv` with `python3.11 -m venv` and `pip install litellm[proxy]==X`
the first time (a few minutes; reused while the pinned version matches). The proxy runs
the way its docs run it in production, minus the database: `litellm --config ...
--num_workers 2` (uvicorn with two worker processes), no DATABASE_URL so no Prisma and no
spend logs, `LITELLM_LOCAL_MODEL_COST_MAP=True` and `--telemetry False` so it stays
offline, a master key so it authenticates each request as Switchyard does, and no
per-request access log (Switchyard's bench stack runs uvicorn with --no-access-log too).

One change to how it starts: uvicorn 0.31 (the version litellm 1.80 pins) kills a worker
that does not answer its supervisor's ping within 5 s, and importing the proxy on a busy
2-core machine takes longer, so workers were killed and respawned forever
(Kludex/uvicorn#2506). `_LAUNCHER` runs the `litellm` command with that ping timeout
raised to 120 s; request handling is untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.devservices import free_port, log_tail, spawn, stop_process
from tests.bench.stack import PROJECT_DIR

LITELLM_VERSION = "1.80.17"
VENV_DIR = PROJECT_DIR / "var" / "bench-litellm-venv"
_STAMP = VENV_DIR / f".installed-litellm-{LITELLM_VERSION}"
_BASE_PYTHON = "python3.11"
_LAUNCHER = """
import sys
from uvicorn.supervisors import multiprocess
ping = multiprocess.Process.ping
multiprocess.Process.ping = lambda self, timeout=5: ping(self, max(timeout, 120))
from litellm.proxy.proxy_cli import run_server
sys.exit(run_server(prog_name="litellm"))
"""
_READY_TIMEOUT_S = 180.0  # importing the proxy takes ~10-20 s of CPU on a busy 2-core box
# uvicorn's default logging minus the access log: one line per request costs CPU that
# Switchyard's bench stack (uvicorn --no-access-log) does not pay either. Its start-up
# lines stay: `_wait_ready` counts one "startup complete" per worker process.
_STARTED = "Application startup complete"
_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO"},
        "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
    },
}


@dataclass
class LiteLLMProxy:
    base_url: str
    master_key: str
    process: subprocess.Popen[bytes]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}


def ensure_venv(log_path: Path) -> Path:
    """The Python of the benchmark's virtualenv, installing litellm into it if needed."""
    python = VENV_DIR / "bin" / "python"
    if _STAMP.exists() and python.exists():
        return python
    base = shutil.which(_BASE_PYTHON)
    if base is None:
        raise RuntimeError(f"{_BASE_PYTHON} is not on PATH; it is needed to build {VENV_DIR}")
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {VENV_DIR} "
          f"(once; log {log_path}) …", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        for command in ([base, "-m", "venv", str(VENV_DIR)],
                        [str(VENV_DIR / "bin" / "pip"), "install", "--quiet",
                         f"litellm[proxy]=={LITELLM_VERSION}"]):
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=1800, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                   f"{log_tail(log_path)}")
    for old in VENV_DIR.glob(".installed-litellm-*"):
        old.unlink()
    _STAMP.touch()
    return python


@contextmanager
def litellm_proxy(models: Mapping[str, str], api_base: str, *, workers: int,
                  log_dir: Path) -> Iterator[LiteLLMProxy]:
    """Run the proxy on 127.0.0.1 with each `models` name → that upstream model at `api_base`.

    Stops it (the whole process group: the CLI and its uvicorn workers) on exit.
    """
    python = ensure_venv(log_dir / "litellm-install.log")
    log_dir.mkdir(parents=True, exist_ok=True)
    master_key = f"sk-bench-{secrets.token_urlsafe(12)}"
    config = {
        "model_list": [
            {"model_name": name,
             "litellm_params": {"model": f"openai/{upstream}", "api_base": api_base,
                                "api_key": "sk-bench"}}
            for name, upstream in models.items()
        ],
        "general_settings": {"master_key": master_key},
        "litellm_settings": {"set_verbose": False, "json_logs": False},
    }
    config_path = log_dir / "litellm-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_config_path = log_dir / "litellm-logging.json"
    log_config_path.write_text(json.dumps(_LOG_CONFIG))
    port = free_port()
    # A clean environment: no DATABASE_URL (that would turn on Prisma), no provider keys,
    # and a working directory without the project's .env (the proxy loads ./.env).
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR")
           if name in os.environ}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION", "NO_PROXY": "*"}
    process = spawn([str(python), "-c", _LAUNCHER, "--config", str(config_path),
                     "--host", "127.0.0.1",
                     "--port", str(port), "--num_workers", str(workers), "--telemetry", "False",
                     "--log_config", str(log_config_path)],
                    log_path=log_dir / "litellm.log", env=env, cwd=log_dir)
    proxy = LiteLLMProxy(f"http://127.0.0.1:{port}", master_key, process)
    try:
        _wait_ready(proxy, log_dir / "litellm.log", workers)
        yield proxy
    finally:
        stop_process(process, signal.SIGTERM, 15)


def _wait_ready(proxy: LiteLLMProxy, log_path: Path, workers: int) -> None:
    """Until every worker process has started (one answering is not enough to measure)."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"litellm exited with {proxy.process.returncode}:\n"
                               f"{log_tail(log_path)}")
        started = log_path.read_text(errors="replace").count(_STARTED)
        if started >= workers:
            try:
                response = httpx.get(f"{proxy.base_url}/health/liveliness", timeout=2)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"litellm not ready after {_READY_TIMEOUT_S:.0f}s:\n{log_tail(log_path)}")
