"""Every queue an actor can be sent to belongs to exactly one group of worker processes."""

from __future__ import annotations

from schemas.jobs import JOB_ROUTES, QUEUE_GROUPS, WEBHOOK_ROUTE, QueueGroup, queues_in


def test_every_routed_queue_has_a_group() -> None:
    routed = {route.queue_name for route in (*JOB_ROUTES.values(), WEBHOOK_ROUTE)}
    assert routed <= set(QUEUE_GROUPS)


def test_streams_and_ingestion_run_in_different_groups() -> None:
    assert JOB_ROUTES["chat"].queue_name in queues_in(QueueGroup.io)
    assert JOB_ROUTES["ingest"].queue_name in queues_in(QueueGroup.cpu)
    assert queues_in(QueueGroup.io).isdisjoint(queues_in(QueueGroup.cpu))
    assert queues_in(QueueGroup.io) | queues_in(QueueGroup.cpu) == set(QUEUE_GROUPS)
