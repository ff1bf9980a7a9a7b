"""A `sitecustomize` that cuts a subprocess off the network, for the offline tests.

Tests put it first on the subprocess's PYTHONPATH, run the code under test there, and assert
that `NETWORK_ATTEMPTS_LOG` stayed empty.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

NO_NETWORK_SITECUSTOMIZE = textwrap.dedent(
    """
    import os
    import socket


    def _refuse(*args):
        # Libraries swallow connection errors (unstructured's telemetry does), so every
        # attempt is also written down for the test to assert on.
        with open(os.environ["NETWORK_ATTEMPTS_LOG"], "a") as log:
            log.write(f"{args}\\n")
        raise OSError("network disabled for this test")


    class _NoNetwork(socket.socket):
        # Creating (and binding) sockets stays allowed: urllib3 probes IPv6 support at import.
        def connect(self, address):
            _refuse("connect", address)

        def connect_ex(self, address):
            _refuse("connect_ex", address)


    socket.socket = _NoNetwork
    socket.getaddrinfo = lambda *a, **k: _refuse("getaddrinfo", a)
    socket.create_connection = lambda *a, **k: _refuse("create_connection", a)
    """
)


def no_network_site(tmp_path: Path) -> Path:
    """A folder holding the no-network `sitecustomize.py`, to put first on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_NETWORK_SITECUSTOMIZE)
    return site
