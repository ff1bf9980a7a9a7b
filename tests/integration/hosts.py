"""Test "hosts": Linux network namespaces, each joined to this machine by a veth pair, with
its own empty working directory and /tmp, running Switchyard processes that reach the
test's Postgres and Redis only over that link.

The test's Postgres and Redis listen on 127.0.0.1, which a namespace cannot reach, so a
small TCP forwarder on the host end of each veth relays to them (as a router or a
service IP would). Creating namespaces needs root (CAP_SYS_ADMIN); where the kernel or
the sandbox refuses, `NetHost.create` skips the test and says why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from api.devservices import spawn, wait_or_kill


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class TcpForwarder:
    """Relays connections accepted on (host, any port) to a loopback port, on a thread."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        self.listen_host = listen_host
        self.target_port = target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="forwarder")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpForwarder:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("forwarder did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, self.listen_host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        # Stopped: close the relays still open, then the loop itself.
        for writer in list(self._writers):
            writer.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(timeout=10)


@dataclass
class NetHost:
    """One namespace ("host") with its veth link and forwarders to Postgres and Redis."""

    name: str
    index: int
    root: Path
    forwarders: list[TcpForwarder] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host_ip(self) -> str:
        return f"10.231.{self.index}.1"

    @property
    def ns_ip(self) -> str:
        return f"10.231.{self.index}.2"

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def create(cls, index: int, root: Path) -> NetHost:
        if shutil.which("ip") is None:
            pytest.skip("iproute2's `ip` is not installed: no network namespaces for hosts")
        name = f"sy-h{index}-{uuid.uuid4().hex[:6]}"
        added = _ip("netns", "add", name)
        if added.returncode != 0:
            pytest.skip(f"`ip netns add` was refused ({added.stderr.strip()}): multi-host "
                        "tests need root / CAP_SYS_ADMIN and a kernel with network namespaces")
        host = cls(name, index, root)
        host_if, ns_if = f"syh{index}{name[-4:]}", f"syn{index}{name[-4:]}"
        steps = [
            ("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
            ("link", "set", ns_if, "netns", name),
            ("addr", "add", f"{host.host_ip}/24", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("netns", "exec", name, "ip", "addr", "add", f"{host.ns_ip}/24", "dev", ns_if),
            ("netns", "exec", name, "ip", "link", "set", ns_if, "up"),
            ("netns", "exec", name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                host.destroy()
                pytest.skip(f"`ip {' '.join(step)}` was refused: {done.stderr.strip()}")
        host.workdir.mkdir(parents=True)
        host.tmpdir.mkdir(parents=True)
        return host

    def reach(self, url: str) -> str:
        """`url` (a loopback Postgres or Redis URL) as this host reaches it: through a
        forwarder on the host end of its veth link."""
        parts = urlsplit(url)
        assert parts.port is not None
        forwarder = TcpForwarder(self.host_ip, parts.port).start()
        self.forwarders.append(forwarder)
        netloc = parts.netloc.rsplit("@", 1)
        address = f"{self.host_ip}:{forwarder.port}"
        new_netloc = f"{netloc[0]}@{address}" if len(netloc) == 2 else address
        return urlunsplit(parts._replace(netloc=new_netloc))

    def run(self, args: list[str], env: Mapping[str, str], log_path: Path) -> \
            subprocess.Popen[bytes]:
        """Start `args` inside the namespace, in its empty working directory and /tmp."""
        full_env = {**env, "TMPDIR": str(self.tmpdir), "HOME": str(self.workdir)}
        process = spawn(["ip", "netns", "exec", self.name, *args], log_path=log_path,
                        env=full_env, cwd=self.workdir)
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        """Every process of this host dies at once, as when the machine is lost."""
        for process in self.processes:
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def destroy(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
            wait_or_kill(process, 20)
        for forwarder in self.forwarders:
            forwarder.stop()
        _ip("netns", "del", self.name)


def worker_args(processes: int = 1, threads: int = 4, cpu_processes: int = 1) -> list[str]:
    return [sys.executable, "-m", "workers.supervise", "--processes", str(processes),
            "--threads", str(threads), "--cpu-processes", str(cpu_processes)]
