"""`WakeableRedisBroker.release` against the installed Dramatiq's dispatch.lua: a dead
worker process's unacked messages go back on their queues at once, nobody else's do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from dramatiq import Message

from pipelines.keys import Keys
from workers.consumer import WakeableRedisBroker

# Far longer than the test: only `release` can bring a message back.
HEARTBEAT_TIMEOUT_MS = 600_000


@pytest.fixture
def brokers() -> Iterator[list[WakeableRedisBroker]]:
    made: list[WakeableRedisBroker] = []
    yield made
    for broker in made:
        broker.close()


def test_release_requeues_only_the_dead_brokers_messages_and_wakes_consumers(
    brokers: list[WakeableRedisBroker], redis_url: str, namespace: str
) -> None:
    def broker() -> WakeableRedisBroker:
        made = WakeableRedisBroker(keys=Keys(namespace), url=redis_url, middleware=[],
                                   heartbeat_timeout=HEARTBEAT_TIMEOUT_MS)
        brokers.append(made)
        return made

    producer, dead, live, supervisor, fresh = (broker() for _ in range(5))
    for job in ("dead-job", "live-job"):
        producer.enqueue(_message(job))
    producer.enqueue(_message("dead-retry"), delay=60_000)
    assert _args(dead.do_fetch("chat", 1)) == ["dead-job"]
    assert _args(dead.do_fetch("chat.DQ", 1)) == ["dead-retry"]
    assert _args(live.do_fetch("chat", 1)) == ["live-job"]
    assert fresh.do_fetch("chat", 10) == [] and fresh.do_fetch("chat.DQ", 10) == []
    client = redis.Redis.from_url(redis_url)
    client.delete(Keys(namespace).wake("chat"))

    supervisor.release(dead.broker_id, {"chat"})

    assert _args(fresh.do_fetch("chat", 10)) == ["dead-job"]
    assert _args(fresh.do_fetch("chat.DQ", 10)) == ["dead-retry"]
    assert client.llen(Keys(namespace).wake("chat")) >= 1
    client.close()


def _message(job_id: str) -> Message[None]:
    return Message(queue_name="chat", actor_name="run_chat", args=(job_id,), kwargs={},
                   options={})


def _args(fetched: list[bytes]) -> list[str]:
    return [Message.decode(data).args[0] for data in fetched]
