"""What operators see of queues, and what they can do to them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QueueRead(BaseModel):
    name: str
    queued: int = Field(description="Messages waiting to be taken.")
    delayed: int = Field(description="Messages waiting for their due time (retry backoff).")
    in_flight: int = Field(description="Messages taken by a worker and not yet acknowledged.")
    dead_letters: int = Field(description="Messages that exhausted their retries.")
    paused: bool = Field(description="Workers take no message from a paused queue.")


class QueueList(BaseModel):
    data: list[QueueRead]


class PurgeResult(BaseModel):
    queue: str
    purged: int = Field(description="Dead letters removed.")
