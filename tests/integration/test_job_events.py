"""A job's events over SSE and WebSocket: framing, exact resume, terminal endings, cancel."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from pipelines.keys import Keys
from tests.integration.jobclient import (
    EventLogReader,
    SseEvent,
    assert_contiguous,
    lorem_input,
    poll,
    sse_events,
    submit,
    wait_status,
)


def test_sse_frames_carry_id_and_event_and_the_stream_ends_after_the_terminal_event(
    http: httpx.Client,
) -> None:
    job = submit(http, "noop", {"k": "v"})

    events = sse_events(http, job["id"])

    assert [e.type for e in events] == ["queued", "started", "succeeded"]
    assert_contiguous(events)
    assert events[-1].data == {"result": {"echo": {"k": "v"}}}


def test_sse_streams_every_delta_of_a_chat_job_in_order(http: httpx.Client) -> None:
    job = submit(http, "chat", lorem_input(12, delay_ms=15))

    events = sse_events(http, job["id"])

    assert_contiguous(events)
    assert events[-1].type == "succeeded"
    text = "".join(e.data.get("text", "") for e in events if e.type == "delta")
    assert text == events[-1].data["result"]["content"]
    assert len(text.split()) == 12


def test_resuming_with_last_event_id_mid_stream_loses_and_repeats_nothing(
    http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "chat", lorem_input(40, delay_ms=25))

    received: list[SseEvent] = []
    for _ in range(3):
        last = received[-1].id if received else None
        part = sse_events(http, job["id"], last_event_id=last, stop_after=5)
        assert part, "a resumed stream sent nothing"
        received += part
    assert received[-1].type not in ("succeeded", "failed"), "job too fast to test a resume"
    received += sse_events(http, job["id"], last_event_id=received[-1].id)

    assert_contiguous(received)
    assert received[-1].type == "succeeded"
    assert [e.id for e in received] == [e.id for e in log.events(job["id"])]


def test_resuming_after_the_terminal_event_ends_at_once(http: httpx.Client) -> None:
    job = submit(http, "noop")
    events = sse_events(http, job["id"])

    started = time.monotonic()
    again = sse_events(http, job["id"], last_event_id=events[-1].id, timeout_s=5)

    assert again == []
    assert time.monotonic() - started < 2


def test_a_long_finished_job_still_gets_its_terminal_event(
    stack: Any, http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "noop", {"old": True})
    wait_status(http, job["id"])
    assert [e.type for e in sse_events(http, job["id"])][-1] == "succeeded"
    # The event log expires some hours after the job ends; the job row stays.
    log.redis.delete(Keys(stack.namespace).events(job["id"]))

    events = sse_events(http, job["id"], timeout_s=5)

    assert [e.type for e in events] == ["succeeded"]
    assert events[0].data == {"result": {"echo": {"old": True}}}


def test_following_a_retried_job_from_the_start_ends_with_the_new_attempt(
    http: httpx.Client,
) -> None:
    job = submit(http, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    assert wait_status(http, job["id"])["status"] == "failed"
    assert http.post(f"/v1/jobs/{job['id']}/retry").status_code == 202

    events = sse_events(http, job["id"])

    types = [e.type for e in events]
    assert types.count("failed") == 2, types
    assert types.count("started") == 2 and "retry" in types
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_cancelling_mid_stream_ends_the_stream_and_stops_the_worker_within_a_token(
    stack: Any, http: httpx.Client, log: EventLogReader
) -> None:
    delay_ms = 40
    job = submit(http, "chat", lorem_input(300, delay_ms=delay_ms))
    events: list[SseEvent] = []
    with httpx.Client(base_url=stack.base_url, headers=stack.headers) as other:
        with connect_sse(http, "GET", f"/v1/jobs/{job['id']}/events") as source:
            for sse in source.iter_sse():
                payload = json.loads(sse.data)
                events.append(SseEvent(sse.id, sse.event, payload["seq"], payload["data"]))
                if sse.event == "delta" and [e.type for e in events].count("delta") == 3:
                    assert other.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200

    assert events[-1].type == "cancelled"
    assert events[-1].data == {"reason": "requested"}
    assert_contiguous(events)
    # Long enough for several more tokens, had the worker not stopped.
    time.sleep(delay_ms * 5 / 1000)
    logged = log.types(job["id"])
    assert logged[-1] == "cancelled" and logged.count("cancelled") == 1
    assert logged.count("delta") <= 5, logged
    assert "succeeded" not in logged
    poll(lambda: f'"job_id":"{job["id"]}"' in _cancelled_lines(stack), timeout_s=2,
         what="the worker to stop the cancelled job")
    assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"


def _cancelled_lines(stack: Any) -> str:
    return "\n".join(line for line in stack.workers_log.read_text().splitlines()
                     if "job cancelled" in line)


def test_the_websocket_sends_the_same_events_as_json_answers_pings_and_closes_at_the_end(
    stack: Any, http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "chat", lorem_input(10, delay_ms=30))
    url = stack.base_url.replace("http", "ws", 1) + f"/v1/jobs/{job['id']}/ws"

    frames: list[dict[str, Any]] = []
    with ws_connect(url, additional_headers=stack.headers, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "ping"}))
        for raw in ws:
            frames.append(json.loads(raw))
        close_code = ws.close_code

    assert close_code == 1000
    assert {"type": "pong"} in frames
    events = [SseEvent(f["id"], f["type"], f["seq"], f["data"]) for f in frames
              if f["type"] not in ("pong", "ping")]
    assert all(f["job_id"] == job["id"] for f in frames if "job_id" in f)
    assert_contiguous(events)
    assert events[-1].type == "succeeded"
    assert [e.id for e in events] == [e.id for e in log.events(job["id"])]


def test_the_websocket_ignores_unreadable_and_too_deep_frames_and_still_answers_pings(
    stack: Any, http: httpx.Client
) -> None:
    job = submit(http, "chat", lorem_input(10, delay_ms=30))
    url = stack.base_url.replace("http", "ws", 1) + f"/v1/jobs/{job['id']}/ws"
    frames: list[dict[str, Any]] = []
    with ws_connect(url, additional_headers=stack.headers, open_timeout=5) as ws:
        ws.send("[" * 300 + "]" * 300)  # deeper than any JSON input may be
        ws.send("not json")
        ws.send(json.dumps({"type": "ping"}))
        for raw in ws:
            frames.append(json.loads(raw))
        close_code = ws.close_code
    assert {"type": "pong"} in frames
    assert close_code == 1000 and frames[-1]["type"] == "succeeded"


def test_the_websocket_resumes_after_last_event_id(
    stack: Any, http: httpx.Client, log: EventLogReader
) -> None:
    job = submit(http, "noop")
    wait_status(http, job["id"])
    first = log.events(job["id"])[0]
    url = (stack.base_url.replace("http", "ws", 1)
           + f"/v1/jobs/{job['id']}/ws?last_event_id={first.id}")

    with ws_connect(url, additional_headers=stack.headers, open_timeout=5) as ws:
        frames = [json.loads(raw) for raw in ws]

    assert [f["type"] for f in frames] == ["started", "succeeded"]


# Not stream ids, though `str.isdigit` takes `²` and Python's int() takes any length.
NOT_STREAM_IDS = ["²", "1" * 26, f"{2**64}-0", f"1-{2**64}"]


@pytest.mark.parametrize("last_event_id", NOT_STREAM_IDS)
def test_a_last_event_id_that_is_not_a_stream_id_is_a_400_before_any_stream(
    http: httpx.Client, last_event_id: str
) -> None:
    job = submit(http, "noop")
    url = f"/v1/jobs/{job['id']}/events"

    # As browsers send it: the header in latin-1, the query parameter in UTF-8.
    by_header = http.get(url, headers={"Last-Event-ID": last_event_id.encode("latin-1")})
    by_query = http.get(url, params={"last_event_id": last_event_id})

    for response in (by_header, by_query):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "VALIDATION_FAILED"


@pytest.mark.parametrize("last_event_id", NOT_STREAM_IDS)
def test_the_websocket_refuses_a_last_event_id_that_is_not_a_stream_id(
    stack: Any, http: httpx.Client, last_event_id: str
) -> None:
    job = submit(http, "noop")
    url = (stack.base_url.replace("http", "ws", 1) + f"/v1/jobs/{job['id']}/ws?"
           + str(httpx.QueryParams({"last_event_id": last_event_id})))

    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers=stack.headers, open_timeout=5)

    assert refused.value.response.status_code == 400
