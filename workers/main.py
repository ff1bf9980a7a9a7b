"""Every actor, with the broker they are declared on: what a worker process imports.

Worker processes are started by `python -m workers.supervise` (workers/worker_process.py
imports this module); `dramatiq workers.main` still works for a one-off run. `workers.broker`
sets Dramatiq's global broker on import, so it must be imported (it is first
alphabetically) before any actor module declares its actors.
"""

from workers import (
    broker,
    chains,
    chat,
    compare,
    conversations,
    deploy,
    knowledge,
    noop,
    turns,
    webhook_deliveries,
    webhooks,
)

__all__ = ["broker", "chains", "chat", "compare", "conversations", "deploy", "knowledge",
           "noop", "turns", "webhook_deliveries", "webhooks"]
