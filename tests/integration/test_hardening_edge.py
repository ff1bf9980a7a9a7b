"""The API's edge against hostile clients: huge and trickled request heads and bodies, webhook
URLs that reach this machine, and start-up without real secrets.

Every connection here goes to 127.0.0.1; loopback is also the only address the SSRF tests
name, in all its spellings.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from api.devservices import free_port, spawn, web_command
from tests.integration.conftest import PROJECT_DIR, Stack, _start_stack

BODY_TIMEOUT_S = 2
HEAD_LIMIT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str,
               redis_url: str) -> Iterator[Stack]:
    """A stack as production runs it: no private outbound addresses, a short body deadline."""
    stack = _start_stack(tmp_path_factory.mktemp("edge"), database_url, redis_url,
                         env={"OUTBOUND_ALLOW_PRIVATE": "false",
                              "BODY_READ_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    yield stack
    stack.stop()


def _connect(stack: Stack) -> socket.socket:
    port = int(stack.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed the connection in time."""
    received = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_request_head_over_the_limit_gets_431_and_the_connection_closes(
        edge_stack: Stack) -> None:
    with _connect(edge_stack) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"a" * (HEAD_LIMIT_BYTES + 16 * 1024))
        received, closed = _read_until_closed(sock, 10)
    assert received.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), received[:100]
    assert closed


def test_a_20_mb_header_is_cut_off_without_growing_the_server(edge_stack: Stack) -> None:
    before = _rss_kib(edge_stack.web.pid)
    sent = 0
    with _connect(edge_stack) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < 20 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, closed = _read_until_closed(sock, 10)
    assert closed
    assert sent < 20 * 1024 * 1024  # the server stopped reading long before the end
    assert _rss_kib(edge_stack.web.pid) - before < 32 * 1024


def test_a_trickled_request_head_is_cut_off(edge_stack: Stack) -> None:
    with _connect(edge_stack) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        trickled, closed = 0, False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X")  # one byte of a header that never ends
                trickled += 1
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            _, closed = _read_until_closed(sock, 0.5)
    assert closed, "the server kept a trickling head open for 30 s"
    assert trickled >= 2


def test_a_trickled_body_gets_408_and_the_connection_closes(edge_stack: Stack) -> None:
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{edge_stack.admin_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n").encode()
    with _connect(edge_stack) as sock:
        sock.sendall(head + b'{"kind": "noop", ')
        received, closed = b"", False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            more, closed = _read_until_closed(sock, 0.3)
            received += more
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"REQUEST_TIMEOUT" in received
    assert closed


LOOPBACK_SPELLINGS = [
    "http://127.1:9/hook", "http://2130706433:9/hook", "http://0x7f000001:9/hook",
    "http://[::ffff:127.0.0.1]:9/hook", "http://localhost:9/hook", "http://0.0.0.0:9/hook",
    "http://[::1]:9/hook", "http://user:secret@127.0.0.1:9/hook",
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_a_webhook_url_reaching_this_machine_is_refused_at_submit(edge_stack: Stack,
                                                                   url: str) -> None:
    response = httpx.post(edge_stack.base_url + "/v1/jobs", headers=edge_stack.headers,
                          json={"kind": "noop", "input": {}, "webhook_url": url})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "URL_NOT_ALLOWED"
    assert "private or loopback" in error["message"] or "routable" in error["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0x7f000001",
                                  "2130706433", "127.1"])
def test_a_webhook_subscription_to_this_machine_is_refused_on_create(edge_stack: Stack,
                                                                     host: str) -> None:
    # Refused when made, so nothing is ever sent (deliveries check again, for rebinding).
    response = httpx.post(edge_stack.base_url + "/v1/webhooks", headers=edge_stack.headers,
                          json={"url": f"http://{host}:9/hook", "events": ["job.succeeded"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "URL_NOT_ALLOWED"
    assert "private or loopback" in error["message"]
    listed = httpx.get(edge_stack.base_url + "/v1/webhooks", headers=edge_stack.headers)
    assert all(w["url"] != f"http://{host}:9/hook" for w in listed.json()["data"])


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver_port() -> Iterator[int]:
    _Receiver.received, _Receiver.arrived = [], threading.Event()
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_with_the_operators_setting_a_webhook_reaches_a_loopback_receiver_by_name(
        stack: Stack, receiver_port: int) -> None:
    # The shared stack sets OUTBOUND_ALLOW_PRIVATE=true. The worker resolves `localhost`,
    # checks and pins the address; the receiver still sees the name it was given.
    response = httpx.post(stack.base_url + "/v1/jobs", headers=stack.headers, json={
        "kind": "noop", "input": {"x": 1},
        "webhook_url": f"http://alice:hunter2@localhost:{receiver_port}/hook"})
    assert response.status_code == 202, response.text
    assert _Receiver.arrived.wait(30), "the webhook never arrived"
    headers, body = _Receiver.received[0]
    assert headers["Host"] == f"localhost:{receiver_port}"
    assert "Authorization" not in headers
    secret = stack.env["WEBHOOK_SECRET"].encode()
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert headers["X-Switchyard-Signature"] == expected


def _without_secrets(database_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SWITCHYARD_SECRET_KEY", "WEBHOOK_SECRET", "SWITCHYARD_ENV")}
    return {**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "SWITCHYARD_ADMIN_KEY": "sy-test-admin-0123456789"}


def test_the_api_refuses_to_start_with_the_public_secrets(tmp_path: Path, database_url: str,
                                                          redis_url: str) -> None:
    log_path = tmp_path / "web.log"
    web = spawn(web_command("127.0.0.1", free_port()), log_path=log_path,
                env=_without_secrets(database_url, redis_url), cwd=PROJECT_DIR)
    try:
        code = web.wait(timeout=60)
    finally:
        if web.poll() is None:
            web.kill()
    assert code != 0
    assert "SWITCHYARD_SECRET_KEY and WEBHOOK_SECRET must be set" in log_path.read_text()


def test_worker_processes_refuse_to_start_with_the_public_secrets(database_url: str,
                                                                  redis_url: str) -> None:
    result = subprocess.run([sys.executable, "-c", "import workers.broker"],
                            env=_without_secrets(database_url, redis_url), cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SWITCHYARD_SECRET_KEY and WEBHOOK_SECRET must be set" in result.stderr
    development = subprocess.run(
        [sys.executable, "-c", "import workers.broker"], cwd=PROJECT_DIR,
        env={**_without_secrets(database_url, redis_url), "SWITCHYARD_ENV": "development"},
        capture_output=True, text=True, timeout=60)
    assert development.returncode == 0, development.stderr
