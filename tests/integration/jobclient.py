"""Small clients for the spine's integration tests: submit jobs, wait on them, read events.

Everything polls against a deadline; nothing sleeps for a fixed long time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
import redis
from httpx_sse import connect_sse

from pipelines.keys import Keys

T = TypeVar("T")

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class SseEvent:
    id: str
    type: str
    seq: int
    data: dict[str, Any]


def lorem_input(words: int = 30, delay_ms: float = 0, **extra: Any) -> dict[str, Any]:
    """A `dev/lorem` chat job input: `words` tokens, `delay_ms` apart."""
    body: dict[str, Any] = {
        "model": "dev/lorem",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": words,
        **extra,
    }
    if delay_ms:
        body["dev_options"] = {"token_delay_ms": delay_ms}
    return body


def client(stack: Any, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers=stack.headers, timeout=10.0, **kwargs)


def submit(http: httpx.Client, kind: str, input: dict[str, Any] | None = None,
           **headers: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", json={"kind": kind, "input": input or {}}, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def poll(check: Callable[[], T | None], timeout_s: float = 10.0, interval_s: float = 0.05,
         what: str = "condition") -> T:
    """Call `check` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def wait_status(http: httpx.Client, job_id: str, statuses: Iterable[str] = TERMINAL,
                timeout_s: float = 15.0) -> dict[str, Any]:
    wanted = tuple(statuses)
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = http.get(f"/v1/jobs/{job_id}").json()
        return last if last.get("status") in wanted else None

    try:
        return poll(check, timeout_s, what=f"job {job_id} to be {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None


def sse_events(http: httpx.Client, job_id: str, *, last_event_id: str | None = None,
               stop_after: int | None = None, timeout_s: float = 15.0) -> list[SseEvent]:
    """Read the job's SSE stream until it ends (or after `stop_after` events, then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[SseEvent] = []
    with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events", headers=headers,
                     timeout=httpx.Timeout(timeout_s)) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            assert sse.id, f"frame without id: {sse}"
            assert sse.event and sse.event != "message", f"frame without event: {sse}"
            payload = sse.json()
            assert payload["type"] == sse.event and payload["id"] == sse.id
            assert payload["job_id"] == job_id
            events.append(SseEvent(sse.id, sse.event, payload["seq"], payload["data"]))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


class EventLogReader:
    """Reads a stack's per-job Redis Streams directly, as the ground truth of what was published."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.keys = Keys(namespace)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> EventLogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self, job_id: str) -> list[SseEvent]:
        entries = self.redis.xrange(self.keys.events(job_id))
        return [
            SseEvent(eid.decode(), fields[b"t"].decode(), int(fields[b"s"]),
                     orjson.loads(fields[b"d"]))
            for eid, fields in entries
        ]

    def types(self, job_id: str) -> list[str]:
        return [event.type for event in self.events(job_id)]


def assert_contiguous(events: list[SseEvent]) -> None:
    """Strictly increasing seq with no gap or repeat, starting at 1, ending in one terminal."""
    seqs = [event.seq for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert [e.type for e in events if e.type in TERMINAL] == [events[-1].type], events


def assert_no_server_errors(stack: Any) -> None:
    """The API process logged no 5xx answer and no traceback (a 502 relayed from a job is fine)."""
    bad = [line for line in stack.web_log.read_text().splitlines()
           if 'HTTP/1.1" 500' in line or "Traceback" in line or '"level":"error"' in line]
    assert not bad, "\n".join(bad[:20])
