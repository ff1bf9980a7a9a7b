"""Job bodies, the job kinds with the actor and queue that run each, and events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class JobRoute(BaseModel):
    """Where a job kind is sent: the API enqueues by this name, never by importing the actor."""

    model_config = ConfigDict(frozen=True)

    actor_name: str
    queue_name: str


JOB_ROUTES: dict[str, JobRoute] = {
    "chat": JobRoute(actor_name="run_chat", queue_name="chat"),
    "noop": JobRoute(actor_name="run_noop", queue_name="default"),
    "compare": JobRoute(actor_name="run_compare", queue_name="chat"),
    "prune": JobRoute(actor_name="prune_conversation", queue_name="default"),
    "ingest": JobRoute(actor_name="ingest_document", queue_name="ingest"),
    "deploy": JobRoute(actor_name="run_deploy", queue_name="deploy"),
    "chain": JobRoute(actor_name="run_chain", queue_name="chains"),
    "chain_step": JobRoute(actor_name="run_chain_step", queue_name="chat"),
    "agent": JobRoute(actor_name="run_agent_turn", queue_name="agents"),
}

# Not a job kind: the delivery of a finished job's webhook, retried with backoff.
WEBHOOK_ROUTE = JobRoute(actor_name="deliver_webhook", queue_name="default")


class QueueGroup(StrEnum):
    """Which worker processes consume a queue (workers/supervise.py starts each group's).

    `io`: jobs that mostly wait on the network (model streams, webhooks), many at once in
    each process. `cpu`: jobs that keep a core busy (partitioning, embedding), in their own
    processes with few threads, so they never hold up the streams.
    """

    io = "io"
    cpu = "cpu"


# Every queue a route above uses, with its group; a worker process refuses to start while
# an actor's queue is missing here, so no queue can go unconsumed.
QUEUE_GROUPS: Mapping[str, QueueGroup] = MappingProxyType({
    "chat": QueueGroup.io,
    "default": QueueGroup.io,
    "ingest": QueueGroup.cpu,
    "deploy": QueueGroup.io,
    "chains": QueueGroup.io,
    "agents": QueueGroup.io,
})


# How stale a worker's knowledge of an operator's queue pause may be: consumers ask Redis
# at most this often (workers/consumer.py), and the pause route answers only after it has
# passed, so a job submitted after the answer is never taken.
QUEUE_PAUSE_CHECK_S = 1.0


def queues_in(group: QueueGroup) -> frozenset[str]:
    """The queues the worker processes of `group` consume."""
    return frozenset(queue for queue, owner in QUEUE_GROUPS.items() if owner is group)


JobKind = Literal["chat", "noop", "compare", "prune", "ingest"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    input: dict[str, Any] = Field(default_factory=dict)
    webhook_url: HttpUrl | None = None
    priority: int = Field(default=0, ge=0, le=10)


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    self: str
    events: str


class JobSummary(BaseModel):
    """A job as listings show it: without `input` and `result`, which can be megabytes each
    (listings read neither column); `GET /v1/jobs/{id}` has both."""

    id: str
    kind: str
    status: JobStatus
    progress: float
    attempts: int
    error: JobError | None = None
    parent_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: JobLinks


class JobRead(JobSummary):
    input: dict[str, Any]
    result: Any = None


class JobList(BaseModel):
    data: list[JobSummary]
    next_cursor: str | None


TERMINAL_EVENT_TYPES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(slots=True, frozen=True)
class Event:
    """One entry of a job's event log; `id` is the Redis Stream id and orders events.

    A dataclass, not a pydantic model: thousands pass through an API process per second.
    """

    id: str
    job_id: str
    seq: int
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "seq": self.seq, "type": self.type,
                "data": self.data}
