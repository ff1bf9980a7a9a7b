"""The async Redis client every process builds: a pool that waits for a free connection, and
commands packed in C.

- redis-py's default pool raises `MaxConnectionsError` the moment more commands are in
  flight than it has connections. One event loop holding hundreds of streams (a worker
  process, or the API under load) easily has more publishes in flight than that, and each
  refusal failed a job attempt. A blocking pool makes the excess wait its turn instead,
  and still gives up (a ConnectionError, answered 503 by the API) if no connection frees
  up within `POOL_TIMEOUT_S`.
- redis-py's asyncio connection packs every command in Python (its sync client can use
  hiredis' packer, the asyncio one cannot): with a publish per token that was the largest
  Python cost left in a worker after auto-pipelining (pipelines/autopipeline.py).
  `_HiredisPackedConnection` packs with `hiredis.pack_command`, on plain TCP connections
  (TLS and unix-socket URLs keep redis-py's own connection classes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, Connection, Redis

POOL_TIMEOUT_S = 10.0


class _HiredisPackedConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        # Like redis-py: a command name given with a space ("SCRIPT LOAD") is two words.
        head = args[0]
        if isinstance(head, str) and " " in head:
            args = (*head.split(), *args[1:])
        elif isinstance(head, bytes) and b" " in head:
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]


def async_redis(url: str, *, max_connections: int) -> Redis:
    """A client on a blocking pool of at most `max_connections` connections."""
    options: dict[str, Any] = {}
    if urlsplit(url).scheme == "redis":
        options["connection_class"] = _HiredisPackedConnection
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                           timeout=POOL_TIMEOUT_S, socket_timeout=30,
                                           health_check_interval=30, **options)
    # from_pool: closing the client closes the pool (a client given a pool leaves it open).
    return Redis.from_pool(pool)
