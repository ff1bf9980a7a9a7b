"""Entry point for `dramatiq workers.main`.

`workers.broker` sets Dramatiq's global broker on import, so it must be imported (it is
first alphabetically) before any actor module declares its actors.
"""

from workers import broker, chat, compare, conversations, knowledge, noop, webhooks

__all__ = ["broker", "chat", "compare", "conversations", "knowledge", "noop", "webhooks"]
