"""The async Redis client every process builds: one pool that waits for a free connection.

redis-py's default pool raises `MaxConnectionsError` the moment more commands are in flight
than it has connections. One event loop holding hundreds of streams (a worker process, or
the API under load) easily has more publishes in flight than that, and each refusal failed
a job attempt. A blocking pool makes the excess wait its turn instead, and still gives up
(a ConnectionError, answered 503 by the API) if no connection frees up within
`POOL_TIMEOUT_S`.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

POOL_TIMEOUT_S = 10.0


def async_redis(url: str, *, max_connections: int) -> Redis:
    """A client on a blocking pool of at most `max_connections` connections."""
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                           timeout=POOL_TIMEOUT_S, socket_timeout=30,
                                           health_check_interval=30)
    return Redis(connection_pool=pool)
