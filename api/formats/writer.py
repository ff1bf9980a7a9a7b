"""What renders a job's stream in one wire format (OpenAI chunks, Anthropic events, the
raw job log, own named events, WebSocket frames): JobStream drives a `Writer`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Generic, Protocol, TypeVar

from schemas.events import JobFailure, failure_of
from schemas.jobs import Event

Out = TypeVar("Out")
Out_co = TypeVar("Out_co", covariant=True)


class Writer(Protocol[Out_co]):
    """Renders a stream in one wire format; a None from any method means: send nothing.

    `sent_content` is True once answer content reached the client, after which a retry
    can no longer be spliced in; writers of the raw job log leave it False.
    """

    sent_content: bool

    def opening(self) -> Out_co | None: ...

    def keepalive(self) -> Out_co | None: ...

    def event(self, event: Event) -> Out_co | None: ...

    def terminal(self, event: Event) -> Out_co | None: ...

    def error(self, failure: JobFailure) -> Out_co | None: ...


class AnswerWriter(ABC, Generic[Out]):
    """A writer of an answer rather than the raw log: the job ends in a finish or an error."""

    sent_content = False

    def opening(self) -> Out | None:
        return None

    def keepalive(self) -> Out | None:
        return None

    def terminal(self, event: Event) -> Out | None:
        if event.type == "succeeded":
            return self.finish(event.data["result"])
        return self.error(failure_of(event))

    @abstractmethod
    def event(self, event: Event) -> Out | None: ...

    @abstractmethod
    def finish(self, result: Any) -> Out | None: ...

    @abstractmethod
    def error(self, failure: JobFailure) -> Out | None: ...
