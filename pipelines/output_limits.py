"""How large a job's result may be, checked before the job is marked succeeded.

The result is stored in the job row (JSONB), carried whole by the terminal `succeeded`
event and read back by `GET /v1/jobs/{id}`, so one unbounded answer once cost a 252 MB row
and as much again in Redis. Event sizes are capped where events are published
(pipelines/events.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from pipelines.errors import ResultTooLarge


def check_result_size(result: Any, max_bytes: int) -> None:
    """Raise ResultTooLarge when `result`, encoded as JSON, is larger than `max_bytes`."""
    size = len(orjson.dumps(result))
    if size > max_bytes:
        raise ResultTooLarge(
            f"The job's result of {size:,} bytes is over the {max_bytes:,}-byte limit.",
            details={"limit": "result_bytes", "max": max_bytes, "found": size})
