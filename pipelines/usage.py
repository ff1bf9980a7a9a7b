"""Token usage of chat completions whose upstream reports none."""

from __future__ import annotations

from typing import Any

from pipelines.ports import Usage
from pipelines.tokens import count_message_tokens, count_tokens


def local_usage(request: dict[str, Any], content: str) -> Usage:
    """Tokens counted offline, for upstreams that report no usage."""
    model = request.get("model")
    return Usage(prompt_tokens=count_message_tokens(request.get("messages") or [], model),
                 completion_tokens=count_tokens(content, model))
