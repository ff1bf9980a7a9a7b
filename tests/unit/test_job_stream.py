"""JobStream's rules with an in-memory hub and event log: no backlog read for a new job,
exact replay for a resumed one, the first decisive item, the retry rule, hang-ups, ticks,
and the overhead it measures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from api.job_stream import INTERRUPTED, TIMED_OUT, JobStream, Tick
from pipelines.events import stream_id_key
from pipelines.keys import Keys
from schemas.events import JobFailure, failure_of
from schemas.jobs import Event

JOB = "job-1"


def event(seq: int, type_: str, **data: Any) -> Event:
    return Event(id=f"{1000 + seq}-0", job_id=JOB, seq=seq, type=type_, data=data)


class Calls(list[str]):
    """What the fakes were asked, in order."""


class FakeHub:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.queue: asyncio.Queue[Any] | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, key: str) -> AsyncIterator[asyncio.Queue[Any]]:
        self.calls.append("subscribe")
        self.queue = asyncio.Queue()
        try:
            yield self.queue
        finally:
            self.calls.append("unsubscribe")

    def publish(self, *events: Event) -> None:
        assert self.queue is not None, "published before anyone subscribed"
        for item in events:
            self.queue.put_nowait(item)


class FakeLog:
    keys = Keys("test")

    def __init__(self, calls: Calls, events: list[Event] | None = None) -> None:
        self.calls = calls
        self.events = events or []

    async def backlog(self, job_id: str, after: str | None = None,
                      count: int = 1000) -> list[Event]:
        self.calls.append(f"backlog after {after}")
        return [e for e in self.events
                if after is None or stream_id_key(e.id) > stream_id_key(after)][:count]

    async def last_event(self, job_id: str) -> Event | None:
        self.calls.append("last_event")
        return self.events[-1] if self.events else None


class Recorder:
    """A writer that names what it was asked to render."""

    def __init__(self) -> None:
        self.sent_content = False

    def opening(self) -> str:
        return "opening"

    def keepalive(self) -> str:
        return "keep-alive"

    def event(self, event: Event) -> str:
        self.sent_content = self.sent_content or event.type == "delta"
        return event.type

    def terminal(self, event: Event) -> str:
        return f"end:{event.type}"

    def error(self, failure: JobFailure) -> str:
        return f"error:{failure['code']}"


def options(**extra: Any) -> dict[str, Any]:
    return {"keepalive_s": 30.0, "lifetime_s": 60.0, **extra}


async def collect(stream: JobStream) -> list[str]:
    return [frame async for frame in stream.frames(Recorder())]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_a_new_job_is_subscribed_before_it_is_submitted_and_its_backlog_is_never_read() -> None:
    calls = Calls()
    hub, log = FakeHub(calls), FakeLog(calls)

    async def scenario() -> None:
        async def submit() -> None:
            calls.append("submit")
            hub.publish(event(1, "queued", kind="chat"), event(2, "started", attempt=1),
                        event(3, "delta", text="hi"), event(4, "succeeded", result={}))

        stream = await JobStream.submit(hub, log, JOB, submit, **options())
        frames = await collect(stream)

        assert frames == ["opening", "queued", "started", "delta", "end:succeeded"]
        assert calls == ["subscribe", "submit", "unsubscribe"]

    run(scenario)


def test_a_failed_submit_unsubscribes_without_abandoning_a_job_that_does_not_exist() -> None:
    calls = Calls()
    abandoned: list[str] = []

    async def scenario() -> None:
        async def submit() -> None:
            raise RuntimeError("database down")

        try:
            await JobStream.submit(FakeHub(calls), FakeLog(calls), JOB, submit,
                                   **options(on_abandon=abandoned.append))
        except RuntimeError:
            pass
        assert calls == ["subscribe", "unsubscribe"]
        assert abandoned == []

    run(scenario)


def test_resuming_replays_the_backlog_after_the_last_id_once_then_follows_live() -> None:
    calls = Calls()
    logged = [event(1, "queued"), event(2, "started"), event(3, "delta", text="a")]
    hub, log = FakeHub(calls), FakeLog(calls, logged)

    async def scenario() -> None:
        stream = await JobStream.resume(hub, log, JOB, after=logged[0].id, **options())
        # Published while the client was away: already in the backlog, and live too.
        hub.publish(logged[1], logged[2], event(4, "delta", text="b"),
                    event(5, "succeeded", result={}))

        frames = await collect(stream)

        assert frames == ["opening", "started", "delta", "delta", "end:succeeded"]
        assert calls == ["subscribe", "backlog after 1001-0", "unsubscribe"]

    run(scenario)


def test_a_terminal_event_in_the_middle_of_a_replay_does_not_end_it() -> None:
    calls = Calls()
    logged = [event(1, "queued"), event(2, "started"), event(3, "failed", error={}),
              event(4, "queued", retry=True), event(5, "started"), event(6, "failed", error={})]

    async def scenario() -> None:
        stream = await JobStream.resume(FakeHub(calls), FakeLog(calls, logged), JOB,
                                        after=None, **options())
        assert await collect(stream) == ["opening", "queued", "started", "failed", "queued",
                                         "started", "end:failed"]

    run(scenario)


def test_resuming_after_the_final_event_ends_at_once_and_an_expired_log_gets_a_stand_in(
) -> None:
    calls = Calls()
    logged = [event(1, "queued"), event(2, "succeeded", result={})]
    stand_in = event(0, "succeeded", result={"from": "row"})

    async def make_stand_in() -> Event:
        return stand_in

    async def scenario() -> None:
        over = await JobStream.resume(FakeHub(calls), FakeLog(calls, logged), JOB,
                                      after=logged[-1].id, **options())
        assert await collect(over) == ["opening"]
        expired = await JobStream.resume(FakeHub(calls), FakeLog(calls), JOB, after=None,
                                         stand_in=make_stand_in, **options())
        assert await collect(expired) == ["opening", "end:succeeded"]

    run(scenario)


def test_the_first_decisive_item_is_returned_and_still_rendered() -> None:
    calls = Calls()
    hub = FakeHub(calls)

    async def scenario() -> None:
        async def submit() -> None:
            hub.publish(event(1, "queued"), event(2, "started"), event(3, "delta", text="a"),
                        event(4, "succeeded", result={}))

        stream = await JobStream.submit(hub, FakeLog(calls), JOB, submit, **options())
        first = await stream.opening()

        assert isinstance(first, Event) and first.type == "delta"
        assert await collect(stream) == ["opening", "queued", "started", "delta",
                                         "end:succeeded"]

    run(scenario)


def test_a_job_that_fails_before_output_decides_the_opening_and_is_not_abandoned() -> None:
    calls = Calls()
    hub = FakeHub(calls)
    abandoned: list[str] = []
    error = {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down", "retry_after_s": 3}

    async def scenario() -> None:
        async def submit() -> None:
            hub.publish(event(1, "queued"), event(2, "started"), event(3, "failed", error=error))

        stream = await JobStream.submit(hub, FakeLog(calls), JOB, submit,
                                        **options(on_abandon=abandoned.append))
        first = await stream.opening()
        await stream.close()

        assert isinstance(first, Event) and failure_of(first) == error
        assert abandoned == []

    run(scenario)


def test_a_retry_after_content_ends_the_answer_with_an_upstream_error_and_abandons_it(
) -> None:
    calls = Calls()
    hub = FakeHub(calls)
    abandoned: list[str] = []

    async def scenario() -> None:
        async def submit() -> None:
            hub.publish(event(1, "started"), event(2, "delta", text="half an"),
                        event(3, "retry", attempt=2), event(4, "started"),
                        event(5, "delta", text="whole answer"), event(6, "succeeded", result={}))

        stream = await JobStream.submit(hub, FakeLog(calls), JOB, submit,
                                        **options(on_abandon=abandoned.append))
        frames = await collect(stream)

        assert frames == ["opening", "started", "delta", f"error:{INTERRUPTED['code']}"]
        assert INTERRUPTED["code"] == "UPSTREAM_ERROR"
        assert abandoned == ["the answer was interrupted by a retry"]

    run(scenario)


def test_a_retry_before_any_content_is_passed_over() -> None:
    calls = Calls()
    hub = FakeHub(calls)

    async def scenario() -> None:
        async def submit() -> None:
            hub.publish(event(1, "started"), event(2, "retry", attempt=2), event(3, "started"),
                        event(4, "delta", text="a"), event(5, "succeeded", result={}))

        stream = await JobStream.submit(hub, FakeLog(calls), JOB, submit, **options())
        assert (await collect(stream))[-2:] == ["delta", "end:succeeded"]

    run(scenario)


def test_a_client_that_hangs_up_ends_the_wait_for_a_whole_answer_and_abandons_the_job() -> None:
    calls = Calls()
    abandoned: list[str] = []

    async def scenario() -> None:
        hung_up = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def submit() -> None:
            return None

        stream = await JobStream.submit(FakeHub(calls), FakeLog(calls), JOB, submit,
                                        **options(on_abandon=abandoned.append))
        stream.watch_disconnect(receive)
        waiting = asyncio.create_task(stream.outcome())
        hung_up.set()

        assert await waiting is Tick.CLIENT_GONE
        assert abandoned == ["client disconnected"]
        assert calls[-1] == "unsubscribe"

    run(scenario)


def test_a_quiet_stream_sends_keep_alives_then_ends_with_a_timeout_when_its_life_is_over(
) -> None:
    calls = Calls()
    abandoned: list[str] = []

    async def scenario() -> None:
        async def submit() -> None:
            return None

        stream = await JobStream.submit(
            FakeHub(calls), FakeLog(calls), JOB, submit,
            **options(keepalive_s=0.01, lifetime_s=0.3, on_abandon=abandoned.append))
        frames = await collect(stream)

        assert frames[:2] == ["opening", "keep-alive"]
        assert frames[-1] == f"error:{TIMED_OUT['code']}"
        assert set(frames[1:-1]) == {"keep-alive"}
        assert abandoned == ["timed out"]

    run(scenario)


def test_overhead_is_the_time_spent_here_less_the_upstreams_never_negative() -> None:
    calls = Calls()
    hub = FakeHub(calls)
    now = [100.0]

    async def scenario() -> None:
        async def open_with(*events: Event) -> JobStream:
            async def submit() -> None:
                hub.publish(*events)

            return await JobStream.submit(hub, FakeLog(calls), JOB, submit,
                                          **options(started_at=100.0, clock=lambda: now[0]))

        now[0] = 100.25
        streamed = await open_with(event(1, "delta", text="a", upstream_ttft_ms=200.0))
        await streamed.opening()
        await streamed.close()
        assert streamed.overhead_ms == 50.0

        now[0] = 101.0
        whole = await open_with(event(1, "succeeded", result={"upstream_ms": 900}))
        await whole.outcome()
        assert whole.overhead_ms == 100.0

        clock_skew = await open_with(event(1, "succeeded", result={"upstream_ms": 5000}))
        await clock_skew.outcome()
        assert clock_skew.overhead_ms == 0.0

        older_worker = await open_with(event(1, "delta", text="a"))
        await older_worker.opening()
        await older_worker.close()
        assert older_worker.overhead_ms is None

    run(scenario)


def test_a_cancelled_job_fails_with_the_one_cancelled_error() -> None:
    assert failure_of(event(1, "cancelled", reason="requested"))["code"] == "CANCELLED"
    error = {"code": "UPSTREAM_ERROR", "message": "bad gateway"}
    assert failure_of(event(1, "failed", error=error)) == error
